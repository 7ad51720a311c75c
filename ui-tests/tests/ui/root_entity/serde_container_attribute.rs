use minos::prelude::*;

#[root_entity]
#[serde(rename_all = "camelCase")]
pub struct Foo {
    pub bar_baz: String,
}

fn main() {}
