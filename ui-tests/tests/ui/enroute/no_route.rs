use minos::prelude::*;

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute]
    async fn foos(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
