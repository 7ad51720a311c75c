use minos::prelude::*;

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    #[enroute(broker = "CreateFoo", request = "str")]
    async fn create_foo(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
