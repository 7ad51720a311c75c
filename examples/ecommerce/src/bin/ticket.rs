//! The ticket service: what an order charges, line by line.
//!
//! - `POST /tickets` `{"cart_uuid"}` and `CreateTicket` (the order saga's first step) make a ticket of a
//!   cart: one entry per product with its title, unit price and units, and the total. The cart and the
//!   prices are read from the cart and product services at that moment (their snapshots, not a view
//!   that may lag). Only the cart's owner (or an admin) can. Answers the ticket.
//! - `GET /tickets/{uuid}` and `GetTicketQRS` answer the query side (the original's `TicketDTO`):
//!   `{"uuid", "version", "code", "total_price", "entries": [{"ticket_uuid", "title", "unit_price",
//!   "quantity", "product_uuid"}]}`.

use minos::prelude::*;
use minos_ecommerce::{aggregate, caught_up, own_or_admin, target, uuid_field, written};

/// A ticket.
#[root_entity]
pub struct Ticket {
    /// Six upper-case hexadecimal characters.
    pub code: String,
    pub total_price: f64,
    pub entries: EntitySet<TicketEntry>,
    /// The customer who owns the cart it was made of.
    pub customer: Uuid,
    /// The cart it was made of.
    pub cart: Uuid,
}

/// One line of a ticket.
#[entity]
pub struct TicketEntry {
    pub title: String,
    pub unit_price: f64,
    pub quantity: i64,
    pub product: Ref<Product>,
}

/// A product, as the ticket reads it from the product service.
#[external_entity(name = "Product")]
pub struct Product {
    pub title: String,
    pub price: f64,
}

/// A cart, as the ticket reads it from the cart service.
#[external_entity(name = "Cart")]
pub struct Cart {
    pub user: Uuid,
    pub entries: Vec<CartLine>,
}

/// A line of a cart.
#[value_object]
pub struct CartLine {
    pub product: Uuid,
    pub quantity: i64,
}

pub struct TicketCommandService;

#[command_service]
impl TicketCommandService {
    /// Makes the ticket of a cart (the owner's token, or an admin's).
    #[enroute(broker = "CreateTicket", rest = "POST /tickets", auth)]
    async fn create_ticket(&self, request: Request) -> Result<Response> {
        let cart_uuid = uuid_field(request.json(), "cart_uuid")?;
        let mut cart: Ref<Cart> = Ref::new(cart_uuid);
        let cart = cart
            .resolve()
            .await
            .map_err(|e| Error::bad_request(format!("the cart {cart_uuid} cannot be read: {e}")))?;
        own_or_admin(&request, cart.user)?;
        if cart.entries.is_empty() {
            return Err(Error::bad_request("the cart is empty"));
        }
        let mut products: Vec<Ref<Product>> = cart
            .entries
            .iter()
            .map(|line| Ref::new(line.product))
            .collect();
        minos::routing::resolve_all(&mut products)
            .await
            .map_err(|e| Error::bad_request(format!("the cart's products cannot be read: {e}")))?;
        let mut entries = EntitySet::new();
        let mut total = 0.0;
        for (line, product) in cart.entries.iter().zip(products) {
            let model = product
                .model()
                .ok_or_else(|| Error::with_status(500, "a product was not resolved"))?;
            total += model.price * line.quantity as f64;
            entries.add(TicketEntry {
                title: model.title.clone(),
                unit_price: model.price,
                quantity: line.quantity,
                product: Ref::new(line.product),
            });
        }
        let ticket = Ticket::create(Ticket {
            code: Uuid::new_v4().simple().to_string()[..6].to_uppercase(),
            total_price: (total * 100.0).round() / 100.0,
            entries,
            customer: cart.user,
            cart: cart_uuid,
        })
        .await?;
        Ok(Response::json(aggregate(&ticket)?))
    }
}

/// A ticket as its readers see it.
#[view]
pub struct TicketView {
    #[key]
    pub uuid: Uuid,
    #[index]
    pub customer: Uuid,
    pub version: i64,
    pub code: String,
    pub total_price: f64,
    /// `[{"ticket_uuid", "title", "unit_price", "quantity", "product_uuid"}]`.
    pub entries: Value,
}

pub struct TicketQueryService;

#[query_service]
impl TicketQueryService {
    #[enroute(event = "TicketCreated", view = TicketView)]
    async fn ticket_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let ticket: Ticket = event.decode_fields()?;
        let entries: Vec<Value> = ticket
            .entries
            .iter()
            .map(|(_, entry)| {
                json!({
                    "ticket_uuid": event.uuid,
                    "title": entry.title,
                    "unit_price": entry.unit_price,
                    "quantity": entry.quantity,
                    "product_uuid": entry.product.uuid(),
                })
            })
            .collect();
        TicketView::upsert(&TicketView {
            uuid: event.uuid,
            customer: ticket.customer,
            version: event.version as i64,
            code: ticket.code,
            total_price: ticket.total_price,
            entries: Value::Array(entries),
        })
        .await
    }

    /// A ticket (its customer's token, or an admin's).
    #[enroute(rest = "GET /tickets/{uuid}", broker = "GetTicketQRS", auth)]
    async fn get_ticket(&self, request: Request) -> Result<Response> {
        let uuid = target(&request)?;
        if written::<Ticket>(uuid).await?.is_some() {
            caught_up(|| async move { Ok(TicketView::get(&uuid).await?.is_some()) }).await?;
        }
        let Some(view) = TicketView::get(&uuid).await? else {
            return Err(Error::not_found(format!("there is no ticket {uuid}")));
        };
        own_or_admin(&request, view.customer)?;
        Ok(Response::json(json!({
            "uuid": view.uuid,
            "version": view.version,
            "code": view.code,
            "total_price": view.total_price,
            "entries": view.entries,
        })))
    }
}

fn main() -> minos::Result<()> {
    // The defaults (`MINOS_*` variables set the store, the broker, the registry): see run.sh.
    minos::Launcher::from_config(concat!(env!("CARGO_MANIFEST_DIR"), "/config/ticket.yml"))?.run()
}
