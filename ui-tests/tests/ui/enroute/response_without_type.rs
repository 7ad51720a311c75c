use minos::prelude::*;

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    #[enroute(rest = "POST /foos", response)]
    async fn create_foo(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
