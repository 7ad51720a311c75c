use minos::prelude::*;

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(rest = "GET /foos")]
    async fn foos(&self, request: String) -> Result<Response> {
        Ok(Response::json(request))
    }
}

fn main() {}
