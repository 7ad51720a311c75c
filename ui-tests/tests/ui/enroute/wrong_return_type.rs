use minos::prelude::*;

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(rest = "GET /foos")]
    async fn foos(&self, _request: Request) -> String {
        String::new()
    }
}

fn main() {}
