use minos::prelude::*;

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(rest = "GET /foos", rest = "GET /bars")]
    async fn list(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
