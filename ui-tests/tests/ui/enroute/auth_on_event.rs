use minos::prelude::*;

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(event = "FooCreated", auth)]
    async fn foo_created(&self, _request: Request) -> Result<()> {
        Ok(())
    }
}

fn main() {}
