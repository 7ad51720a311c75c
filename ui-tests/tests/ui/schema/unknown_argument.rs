use minos::prelude::*;

#[schema(rename = "Create")]
pub struct CreateFoo {
    pub bar: String,
}

fn main() {}
