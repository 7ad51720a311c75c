use minos::prelude::*;

#[view]
pub struct FooSummary {
    #[key]
    pub uuid: Option<Uuid>,
    pub bar: String,
}

fn main() {}
