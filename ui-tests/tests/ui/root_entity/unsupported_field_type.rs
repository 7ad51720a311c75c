use minos::prelude::*;

#[root_entity]
pub struct Foo {
    pub bar: String,
    pub timeout: std::time::Duration,
}

fn main() {}
