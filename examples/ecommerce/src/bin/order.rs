//! The order service: a customer buys their cart.
//!
//! - `POST /orders` (and `CreateOrder`) `{"cart", "customer", "payment_detail": {"card_holder",
//!   "card_number", "card_expire", "card_cvc"}, "shipment_detail": {"name", "last_name", "email",
//!   "address", "country", "city", "province", "zip"}}`, with the customer's token, runs the saga
//!   `CREATE_ORDER`: the ticket service makes the cart's ticket, the product service turns the cart's
//!   reserved units into sold ones, the payment service records the payment, the cart service closes
//!   the cart, and the order is created here. All of it commits together, or (a step refused: not
//!   enough stock, an invalid card, a cart changed meanwhile) none of it does: the participants'
//!   transactions are rejected, so no ticket, no payment, no sold unit stays behind, and the cart keeps
//!   its reserved units. Answers the order; a failure is a 400 with the reason.
//! - `GET /orders/{uuid}` (`GetOrderQRS`) and `GET /orders/user/{uuid}` (`GetUserOrders`) answer the
//!   query side (the original's `OrderDTO`), to the order's customer or an admin.
//!
//! Unlike the original, neither the card number nor its CVC is stored or published: the order keeps
//! the holder, the last four digits and the expiry.

use std::collections::BTreeMap;

use minos::prelude::*;
use minos_ecommerce::{
    aggregate, caller, caught_up, micros, own_or_admin, run_saga, target, written,
};
use serde::{Deserialize, Serialize};

/// An order.
#[root_entity]
pub struct Order {
    pub ticket: Ref<Ticket>,
    pub payment: Ref<Payment>,
    pub payment_detail: PaymentDetail,
    pub shipment_detail: ShipmentDetail,
    /// `completed` once bought.
    pub status: String,
    pub total_amount: f64,
    pub customer: Ref<Customer>,
}

/// How an order was paid: the card's holder, its number masked but for the last four digits, its
/// expiry.
#[value_object]
pub struct PaymentDetail {
    pub card_holder: String,
    pub card_number: String,
    pub card_expire: String,
}

/// Where an order goes.
#[value_object]
pub struct ShipmentDetail {
    pub name: String,
    pub last_name: String,
    pub email: String,
    pub address: String,
    pub country: String,
    pub city: String,
    pub province: String,
    pub zip: i64,
}

#[external_entity(name = "Ticket")]
pub struct Ticket {
    pub total_price: f64,
}

#[external_entity(name = "Payment")]
pub struct Payment {
    pub status: String,
}

#[external_entity(name = "Customer")]
pub struct Customer {
    pub name: String,
    pub surname: String,
}

/// The card as sent: the number may be a JSON number or a string of digits, as may the zip code.
#[schema]
#[derive(Deserialize)]
struct CardSent {
    card_holder: String,
    card_number: Value,
    card_expire: String,
    card_cvc: Value,
}

#[schema]
#[derive(Deserialize)]
struct ShipmentSent {
    name: String,
    last_name: String,
    email: String,
    address: String,
    country: String,
    city: String,
    province: String,
    zip: Value,
}

/// The body of `POST /orders`.
#[schema]
#[derive(Deserialize)]
struct NewOrder {
    cart: Uuid,
    customer: Option<Uuid>,
    payment_detail: CardSent,
    shipment_detail: ShipmentSent,
}

/// Digits of a number sent as a JSON number or a string (spaces and dashes dropped).
fn digits(value: &Value) -> Option<String> {
    let text = match value {
        Value::Number(n) if n.is_u64() => n.to_string(),
        Value::String(s) => s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect(),
        _ => return None,
    };
    (!text.is_empty() && text.chars().all(|c| c.is_ascii_digit())).then_some(text)
}

/// `MM/YY` (or `MM/YYYY`) not before this month.
fn check_expiry(expire: &str) -> Result<()> {
    let invalid = || Error::bad_request("`card_expire` must be `MM/YY`");
    let (month, year) = expire.trim().split_once('/').ok_or_else(invalid)?;
    let month: u32 = month.trim().parse().map_err(|_| invalid())?;
    let mut year: i32 = year.trim().parse().map_err(|_| invalid())?;
    if year < 100 {
        year += 2000;
    }
    if !(1..=12).contains(&month) {
        return Err(invalid());
    }
    let now = Utc::now().date_naive();
    use minos::chrono::Datelike;
    if (year, month) < (now.year(), now.month()) {
        return Err(Error::bad_request("the card has expired"));
    }
    Ok(())
}

pub struct OrderCommandService;

#[command_service]
impl OrderCommandService {
    /// Buys the caller's cart.
    #[enroute(broker = "CreateOrder", rest = "POST /orders", auth, request = NewOrder)]
    async fn create_order(&self, request: Request) -> Result<Response> {
        let order: NewOrder = request.content()?;
        let customer = order.customer.unwrap_or(caller(&request)?);
        own_or_admin(&request, customer)?;
        let card = &order.payment_detail;
        if card.card_holder.trim().is_empty() {
            return Err(Error::bad_request("`card_holder` must not be empty"));
        }
        let number = digits(&card.card_number)
            .filter(|d| (12..=19).contains(&d.len()))
            .ok_or_else(|| Error::bad_request("`card_number` must have 12 to 19 digits"))?;
        check_expiry(&card.card_expire)?;
        if !digits(&card.card_cvc).is_some_and(|d| (3..=4).contains(&d.len())) {
            return Err(Error::bad_request("`card_cvc` must have 3 or 4 digits"));
        }
        let to = &order.shipment_detail;
        let zip = digits(&to.zip)
            .and_then(|d| d.parse::<i64>().ok())
            .ok_or_else(|| Error::bad_request("`zip` must be a number"))?;
        if !to.email.contains('@') {
            return Err(Error::bad_request("`email` must be an e-mail address"));
        }
        let shipment = ShipmentDetail {
            name: to.name.clone(),
            last_name: to.last_name.clone(),
            email: to.email.clone(),
            address: to.address.clone(),
            country: to.country.clone(),
            city: to.city.clone(),
            province: to.province.clone(),
            zip,
        };
        let payment_detail = PaymentDetail {
            card_holder: card.card_holder.clone(),
            card_number: format!(
                "{}{}",
                "*".repeat(number.len() - 4),
                &number[number.len() - 4..]
            ),
            card_expire: card.card_expire.clone(),
        };
        let context = SagaContext::new()
            .with("cart", order.cart)
            .with("customer", customer)
            .with("card_number", &number)
            .with("payment_detail", &payment_detail)
            .with("shipment_detail", &shipment);
        let execution = run_saga(&self.sagas()?, &CREATE_ORDER, context).await?;
        Ok(Response::json(execution.context.get::<Value>("order")?))
    }
}

/// What the order saga keeps of the ticket.
#[derive(Serialize, Deserialize)]
struct TicketSeen {
    uuid: Uuid,
    total_price: f64,
    quantities: BTreeMap<Uuid, i64>,
}

async fn refused(_ctx: SagaContext, response: SagaResponse) -> Result<SagaContext> {
    Err(Error::bad_request(response.message()))
}

/// Step 1 (remote): the ticket of the cart.
async fn create_ticket(ctx: SagaContext) -> Result<SagaRequest> {
    Ok(SagaRequest::new(
        "CreateTicket",
        json!({"cart_uuid": ctx.get::<Uuid>("cart")?}),
    ))
}

async fn ticket_created(mut ctx: SagaContext, response: SagaResponse) -> Result<SagaContext> {
    let ticket: Value = response.content()?;
    let customer: Uuid = ctx.get("customer")?;
    if ticket["customer"].as_str() != Some(customer.to_string().as_str()) {
        return Err(Error::bad_request("the cart belongs to another customer"));
    }
    let mut quantities = BTreeMap::new();
    for entry in ticket["entries"].as_array().into_iter().flatten() {
        let product: Uuid = minos::serde_json::from_value(entry["product"].clone())
            .map_err(|e| Error::with_status(500, format!("a ticket entry without product: {e}")))?;
        *quantities.entry(product).or_insert(0) += entry["quantity"].as_i64().unwrap_or(0);
    }
    ctx.set(
        "ticket",
        TicketSeen {
            uuid: minos::serde_json::from_value(ticket["uuid"].clone())
                .map_err(|e| Error::with_status(500, format!("a ticket without uuid: {e}")))?,
            total_price: ticket["total_price"].as_f64().unwrap_or(0.0),
            quantities,
        },
    );
    Ok(ctx)
}

/// Step 2 (remote): the product service sells the units the cart reserved.
async fn purchase_products(ctx: SagaContext) -> Result<SagaRequest> {
    let ticket: TicketSeen = ctx.get("ticket")?;
    Ok(SagaRequest::new(
        "PurchaseProducts",
        json!({"quantities": ticket.quantities}),
    ))
}

/// Step 3 (remote): the payment of the ticket's total with the card.
async fn create_payment(ctx: SagaContext) -> Result<SagaRequest> {
    let ticket: TicketSeen = ctx.get("ticket")?;
    Ok(SagaRequest::new(
        "CreatePayment",
        json!({"credit_number": ctx.get::<String>("card_number")?, "amount": ticket.total_price}),
    ))
}

async fn payment_created(mut ctx: SagaContext, response: SagaResponse) -> Result<SagaContext> {
    let payment: Value = response.content()?;
    ctx.set("payment", payment["uuid"].clone());
    // The card number was needed for this step only: the stored execution does not keep it.
    ctx.remove("card_number");
    Ok(ctx)
}

async fn payment_refused(mut ctx: SagaContext, response: SagaResponse) -> Result<SagaContext> {
    ctx.remove("card_number");
    Err(Error::bad_request(format!(
        "the payment was refused: {}",
        response.message()
    )))
}

/// Step 4 (remote): the cart service closes the cart it bought.
async fn checkout_cart(ctx: SagaContext) -> Result<SagaRequest> {
    let ticket: TicketSeen = ctx.get("ticket")?;
    Ok(SagaRequest::new(
        "CheckoutCart",
        json!({"uuid": ctx.get::<Uuid>("cart")?, "quantities": ticket.quantities}),
    ))
}

/// Step 5 (local): the order.
async fn create_order(mut ctx: SagaContext) -> Result<SagaContext> {
    let ticket: TicketSeen = ctx.get("ticket")?;
    let order = Order::create(Order {
        ticket: Ref::new(ticket.uuid),
        payment: Ref::new(ctx.get("payment")?),
        payment_detail: ctx.get("payment_detail")?,
        shipment_detail: ctx.get("shipment_detail")?,
        status: "completed".into(),
        total_amount: ticket.total_price,
        customer: Ref::new(ctx.get("customer")?),
    })
    .await?;
    ctx.set("order", aggregate(&order)?);
    Ok(ctx)
}

minos::saga! {
    /// Buys a cart: ticket → purchase of the reserved units → payment → the cart closed → the order.
    /// A refusal at any step rejects every participant's transaction, so nothing of it stays.
    pub static CREATE_ORDER = Saga::builder()
        .remote_step(create_ticket)
        .on_success(ticket_created)
        .on_error(refused)
        .remote_step(purchase_products)
        .on_error(refused)
        .remote_step(create_payment)
        .on_success(payment_created)
        .on_error(payment_refused)
        .remote_step(checkout_cart)
        .on_error(refused)
        .local_step(create_order)
        .commit();
}

/// An order as its readers see it (the original's `OrderDTO`).
#[view]
pub struct OrderView {
    #[key]
    pub uuid: Uuid,
    #[index]
    pub customer_uuid: Uuid,
    pub ticket_uuid: Uuid,
    pub payment_uuid: Uuid,
    pub total_amount: f64,
    pub payment_detail: Value,
    pub shipment_detail: Value,
    pub status: String,
    #[index]
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn dto(view: &OrderView) -> Value {
    json!({
        "uuid": view.uuid,
        "ticket_uuid": view.ticket_uuid,
        "payment_uuid": view.payment_uuid,
        "customer_uuid": view.customer_uuid,
        "total_amount": view.total_amount,
        "payment_detail": view.payment_detail,
        "shipment_detail": view.shipment_detail,
        "status": view.status,
        "created_at": micros(view.created_at),
        "updated_at": micros(view.updated_at),
    })
}

pub struct OrderQueryService;

#[query_service]
impl OrderQueryService {
    #[enroute(event = "OrderCreated", view = OrderView)]
    async fn order_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let order: Order = event.decode_fields()?;
        OrderView::upsert(&OrderView {
            uuid: event.uuid,
            customer_uuid: order.customer.uuid(),
            ticket_uuid: order.ticket.uuid(),
            payment_uuid: order.payment.uuid(),
            total_amount: order.total_amount,
            payment_detail: minos::serde_json::to_value(&order.payment_detail)
                .map_err(|e| Error::with_status(500, e.to_string()))?,
            shipment_detail: minos::serde_json::to_value(&order.shipment_detail)
                .map_err(|e| Error::with_status(500, e.to_string()))?,
            status: order.status,
            created_at: event.created_at,
            updated_at: event.created_at,
        })
        .await
    }

    #[enroute(event = "OrderUpdated", view = OrderView)]
    async fn order_updated(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let Some(mut view) = OrderView::get(&event.uuid).await? else {
            return Ok(());
        };
        if let Some(status) = event.field("status")? {
            view.status = status;
        }
        view.updated_at = event.created_at;
        OrderView::upsert(&view).await
    }

    /// One order, or `null` when there is none (as the original answers).
    #[enroute(rest = "GET /orders/{uuid}", broker = "GetOrderQRS", auth)]
    async fn get_order(&self, request: Request) -> Result<Response> {
        let uuid = target(&request)?;
        if written::<Order>(uuid).await?.is_some() {
            caught_up(|| async move { Ok(OrderView::get(&uuid).await?.is_some()) }).await?;
        }
        match OrderView::get(&uuid).await? {
            Some(view) => {
                own_or_admin(&request, view.customer_uuid)?;
                Ok(Response::json(dto(&view)))
            }
            None => Ok(Response::json(Value::Null)),
        }
    }

    /// A customer's orders, oldest first.
    #[enroute(rest = "GET /orders/user/{uuid}", broker = "GetUserOrders", auth)]
    async fn get_user_orders(&self, request: Request) -> Result<Response> {
        let customer = target(&request)?;
        own_or_admin(&request, customer)?;
        // Orders are never deleted: the view has them all once it has the newest one.
        let newest = Order::find(Condition::eq("customer", customer))
            .order_by(Ordering::desc("created_at"))
            .limit(1)
            .await?;
        if let Some(newest) = newest.first().map(|order| order.uuid()) {
            caught_up(|| async move { Ok(OrderView::get(&newest).await?.is_some()) }).await?;
        }
        let orders = OrderView::find(Condition::eq("customer_uuid", customer))
            .order_by(Ordering::asc("created_at"))
            .await?;
        Ok(Response::json(orders.iter().map(dto).collect::<Vec<_>>()))
    }
}

fn main() -> minos::Result<()> {
    // The defaults (`MINOS_*` variables set the store, the broker, the registry): see run.sh.
    minos::Launcher::from_config(concat!(env!("CARGO_MANIFEST_DIR"), "/config/order.yml"))?.run()
}
