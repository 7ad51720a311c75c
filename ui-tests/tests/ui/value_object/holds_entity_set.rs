use minos::prelude::*;

#[entity]
pub struct Line {
    pub product: String,
}

#[value_object]
pub struct Basket {
    pub lines: EntitySet<Line>,
}

fn main() {}
