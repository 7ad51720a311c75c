use minos::prelude::*;

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(rest = "FETCH /foos")]
    async fn get_foos(&self, _request: Request) -> Result<Response> {
        Ok(Response::empty())
    }
}

fn main() {}
