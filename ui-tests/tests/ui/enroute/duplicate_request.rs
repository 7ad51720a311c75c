use minos::prelude::*;

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    #[enroute(broker = "CreateFoo", request = String)]
    #[enroute(rest = "POST /foos", request = Value)]
    async fn create_foo(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
