use minos::prelude::*;

pub struct FooCommandService {
    pub prefix: String,
}

#[command_service]
impl FooCommandService {
    #[enroute(broker = "CreateFoo")]
    async fn create_foo(&self, _request: Request) -> Result<Response> {
        Ok(Response::json(&self.prefix))
    }
}

fn main() {}
