use minos::prelude::*;

#[view]
pub struct FooSummary {
    #[key]
    pub uuid: Uuid,
}

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    #[enroute(broker = "CreateFoo", view = FooSummary)]
    async fn create_foo(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
