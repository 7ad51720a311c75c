use minos::prelude::*;

#[entity]
pub struct Line {
    pub uuid: Uuid,
    pub product: String,
}

fn main() {}
