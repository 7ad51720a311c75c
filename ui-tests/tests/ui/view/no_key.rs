use minos::prelude::*;

#[view]
pub struct FooSummary {
    pub uuid: Uuid,
    pub bar: String,
}

fn main() {}
