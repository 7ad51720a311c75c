//! The customer service: `POST /customers` and `CreateCustomer` (the authentication service's
//! registration saga), `DELETE /customers/{uuid}` and `DeleteCustomer`. Deleting a customer needs
//! that customer's token (or an admin's); the original let anyone delete anyone.

use minos::prelude::*;
use minos_ecommerce::{aggregate, own_or_admin};
use serde::Deserialize;

/// A customer.
#[root_entity]
pub struct Customer {
    pub name: String,
    pub surname: String,
    pub address: Address,
}

/// Where a customer lives.
#[value_object]
pub struct Address {
    pub street: String,
    pub street_no: i64,
}

/// The body of `POST /customers` and the content of `CreateCustomer`.
#[schema]
#[derive(Deserialize)]
struct NewCustomer {
    name: String,
    surname: String,
    address: NewAddress,
}

#[schema]
#[derive(Deserialize)]
struct NewAddress {
    street: String,
    street_no: i64,
}

pub struct CustomerCommandService;

#[command_service]
impl CustomerCommandService {
    /// Creates a customer; answers the whole customer.
    #[enroute(broker = "CreateCustomer", rest = "POST /customers", request = NewCustomer)]
    async fn create_customer(&self, request: Request) -> Result<Response> {
        let NewCustomer {
            name,
            surname,
            address,
        } = request.content()?;
        if name.trim().is_empty() || surname.trim().is_empty() {
            return Err(Error::bad_request("`name` and `surname` must not be empty"));
        }
        let customer = Customer::create(Customer {
            name,
            surname,
            address: Address {
                street: address.street,
                street_no: address.street_no,
            },
        })
        .await?;
        Ok(Response::json(aggregate(&customer)?))
    }

    /// Deletes a customer: the customer themself or an admin.
    #[enroute(rest = "DELETE /customers/{uuid}", auth)]
    async fn delete_customer(&self, request: Request) -> Result<Response> {
        let uuid: Uuid = request.param("uuid")?;
        own_or_admin(&request, uuid)?;
        delete(uuid).await
    }

    /// `{"uuid": …}`: deletes a customer (services call it; the broker is the trust boundary).
    #[enroute(broker = "DeleteCustomer")]
    async fn delete_customer_command(&self, request: Request) -> Result<Response> {
        let uuid: Uuid = request
            .content::<Value>()?
            .get("uuid")
            .and_then(|u| u.as_str())
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| Error::bad_request("The given request could not be parsed."))?;
        delete(uuid).await
    }
}

async fn delete(uuid: Uuid) -> Result<Response> {
    match Customer::get(uuid).await {
        Ok(customer) => customer.delete().await?,
        Err(error) if error.is_not_found() || error.is_deleted() => {
            return Err(Error::bad_request(
                "The requested user could not be retrieved from the database.",
            ))
        }
        Err(error) => return Err(error),
    }
    Ok(Response::empty())
}

fn main() -> minos::Result<()> {
    // The defaults (`MINOS_*` variables set the store, the broker, the registry): see run.sh.
    minos::Launcher::from_config(concat!(env!("CARGO_MANIFEST_DIR"), "/config/customer.yml"))?.run()
}
