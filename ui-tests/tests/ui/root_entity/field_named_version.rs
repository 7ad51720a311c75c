use minos::prelude::*;

#[root_entity]
pub struct Foo {
    pub bar: String,
    pub version: u64,
    pub updated_at: DateTime<Utc>,
}

fn main() {}
