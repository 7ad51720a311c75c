use minos::prelude::*;

pub struct FooCommandService;

#[command_service]
impl FooCommandService {
    #[enroute(event = "FooCreated")]
    async fn foo_created(&self, _request: Request) -> Result<()> {
        Ok(())
    }
}

fn main() {}
