use minos::prelude::*;

pub struct FooCommandService;

#[command_service(instance = "FooCommandService::new")]
impl FooCommandService {}

fn main() {}
