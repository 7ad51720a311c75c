use minos::prelude::*;

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    #[enroute(broker = "CreateFoo")]
    async fn create_foo(&self) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
