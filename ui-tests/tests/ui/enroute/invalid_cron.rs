use minos::prelude::*;

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(periodic = "every five minutes")]
    async fn tidy(&self, _request: Request) -> Result<()> {
        Ok(())
    }
}

fn main() {}
