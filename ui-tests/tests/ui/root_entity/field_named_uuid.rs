use minos::prelude::*;

#[root_entity]
pub struct Foo {
    pub uuid: Uuid,
    pub bar: String,
}

fn main() {}
