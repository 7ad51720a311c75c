use minos::prelude::*;

#[view]
pub struct FooSummary<'a> {
    #[key]
    pub uuid: Uuid,
    pub bar: &'a str,
}

fn main() {}
