use minos::prelude::*;

#[value_object]
pub struct Label {
    pub text: String,
}

#[root_entity]
pub struct Foo {
    pub labels: EntitySet<Label>,
}

fn main() {}
