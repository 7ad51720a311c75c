use minos::prelude::*;

#[root_entity]
pub struct Foo {
    pub bar: String,
}

pub struct FooQueryService;

#[query_service]
impl FooQueryService {
    #[enroute(event = "FooCreated", request = Foo)]
    async fn foo_created(&self, _request: Request) -> Result<()> {
        Ok(())
    }
}

fn main() {}
