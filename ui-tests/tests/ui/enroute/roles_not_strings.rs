use minos::prelude::*;

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    #[enroute(rest = "DELETE /foos/{uuid}", roles = [admin, "owner", "owner"])]
    async fn delete_foo(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }

    #[enroute(rest = "PUT /foos/{uuid}", roles = "admin")]
    async fn update_foo(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
