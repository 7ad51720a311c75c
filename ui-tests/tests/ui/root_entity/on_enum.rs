use minos::prelude::*;

#[root_entity]
pub enum Status {
    Open,
    Closed,
}

fn main() {}
