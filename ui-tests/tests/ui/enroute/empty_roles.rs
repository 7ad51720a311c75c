use minos::prelude::*;

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    #[enroute(rest = "DELETE /foos/{uuid}", roles = [])]
    async fn delete_foo(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
