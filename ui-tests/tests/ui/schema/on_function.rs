use minos::prelude::*;

#[schema]
pub fn create_foo() {}

fn main() {}
