use minos::prelude::*;

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(event = "FooCreated", view = "FooSummary")]
    async fn on_created(&self, _request: Request) -> Result<()> {
        Ok(())
    }
}

fn main() {}
