use minos::prelude::*;

#[view]
pub struct FooSummary {
    #[key]
    pub uuid: Uuid,
}

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(event = "SomethingHappened", view = FooSummary)]
    async fn on_something(&self, _request: Request) -> Result<()> {
        Ok(())
    }
}

fn main() {}
