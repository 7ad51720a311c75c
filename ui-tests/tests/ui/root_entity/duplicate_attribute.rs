use minos::prelude::*;

#[root_entity(name = "Foo", name = "Bar")]
pub struct Foo {
    pub bar: String,
}

fn main() {}
