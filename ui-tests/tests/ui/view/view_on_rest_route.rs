use minos::prelude::*;

#[view]
pub struct FooSummary {
    #[key]
    pub uuid: Uuid,
}

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(rest = "GET /foos", view = FooSummary)]
    async fn list(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
