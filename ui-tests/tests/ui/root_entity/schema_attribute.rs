use minos::prelude::*;

#[root_entity]
#[schema]
pub struct Foo {
    pub bar: String,
}

fn main() {}
