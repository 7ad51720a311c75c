use minos::prelude::*;

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(rest = "GET /foos", event = "FooCreated")]
    async fn foos(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
