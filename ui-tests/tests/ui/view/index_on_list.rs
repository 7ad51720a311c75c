use minos::prelude::*;

#[view]
pub struct FooSummary {
    #[key]
    pub uuid: Uuid,
    #[index]
    pub tags: Vec<String>,
}

fn main() {}
