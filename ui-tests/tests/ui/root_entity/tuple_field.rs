use minos::prelude::*;

#[root_entity]
pub struct Foo {
    pub position: (f64, f64),
}

fn main() {}
