use minos::prelude::*;

#[view(table = "foos")]
pub struct FooSummary {
    #[key]
    pub uuid: Uuid,
}

fn main() {}
