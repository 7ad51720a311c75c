use minos::prelude::*;

#[root_entity]
pub struct Foo(String);

fn main() {}
