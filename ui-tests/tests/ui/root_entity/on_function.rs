use minos::prelude::*;

#[root_entity]
fn create_foo() {}

fn main() {}
