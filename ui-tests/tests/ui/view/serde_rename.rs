use minos::prelude::*;

#[view]
pub struct FooSummary {
    #[key]
    pub uuid: Uuid,
    #[serde(rename = "Bar")]
    pub bar: String,
}

fn main() {}
