use minos::prelude::*;

#[root_entity]
pub struct Foo {
    #[serde(rename = "b")]
    pub bar: String,
    #[serde(default)]
    pub baz: Option<String>,
}

fn main() {}
