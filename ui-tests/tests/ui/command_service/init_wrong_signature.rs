use minos::prelude::*;

pub struct Greeter {
    greeting: String,
}

impl Greeter {
    fn new(greeting: String) -> Self {
        Greeter { greeting }
    }
}

#[command_service(init = "Greeter::new")]
impl Greeter {
    #[enroute(broker = "Greet")]
    async fn greet(&self, _request: Request) -> Result<Response> {
        Ok(Response::json(&self.greeting))
    }
}

fn main() {}
