use minos::prelude::*;

#[enroute(broker = "CreateFoo")]
async fn create_foo(_request: Request) -> Result<Response> {
    Ok(Response::empty())
}

fn main() {}
