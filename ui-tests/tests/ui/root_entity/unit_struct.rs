use minos::prelude::*;

#[root_entity]
pub struct Marker;

fn main() {}
