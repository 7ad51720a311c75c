use minos::prelude::*;

#[root_entity(table = "foos")]
pub struct Foo {
    pub bar: String,
}

fn main() {}
