use minos::prelude::*;

pub struct FooCommandService;

pub trait Handlers {}

#[command_service]
impl Handlers for FooCommandService {}

fn main() {}
