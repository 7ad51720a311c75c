use minos::prelude::*;

#[root_entity(name = "Foo Bar")]
pub struct Foo {
    pub bar: String,
}

fn main() {}
