use minos::prelude::*;

#[root_entity]
pub struct Foo {
    pub bar: &'static str,
}

fn main() {}
