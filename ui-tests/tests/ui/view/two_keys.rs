use minos::prelude::*;

#[view]
pub struct FooSummary {
    #[key]
    pub uuid: Uuid,
    #[key]
    pub bar: String,
}

fn main() {}
