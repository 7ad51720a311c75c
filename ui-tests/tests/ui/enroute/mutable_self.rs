use minos::prelude::*;

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    #[enroute(broker = "CreateFoo")]
    async fn create_foo(&mut self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
