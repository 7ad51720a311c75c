use minos::prelude::*;

#[root_entity]
pub struct Foo<T> {
    pub bar: T,
}

fn main() {}
