//! The cart service: a customer's cart and the stock it holds.
//!
//! REST (each needs the cart owner's token, or an admin's), with the original's paths and bodies:
//! - `POST /carts` creates the caller's cart: the cart (`{"uuid", "version", "created_at",
//!   "updated_at", "user", "entries": []}`).
//! - `POST /carts/{uuid}/items` `{"product_uuid", "quantity"}` adds units of a product (more units of a
//!   product already in the cart add up), `PUT /carts/{uuid}/items` sets them, `DELETE
//!   /carts/{uuid}/items` `{"product_uuid"}` removes the product, `DELETE /carts/{uuid}` deletes the
//!   cart. Each runs a saga that reserves (or releases) the units in the product service and changes
//!   the cart, both or neither, and answers the saga execution's uuid once it ended; a refusal (not
//!   enough stock, an unknown product) is a 400 with the reason.
//! - `GET /carts/{uuid}` answers the query side: `{"uuid", "version", "user", "products": [{"product_id",
//!   "cart_id", "quantity", "title", "description", "price"}]}`.
//!
//! Broker: the same commands (`CreateCart`, `CreateCartItem`, `UpdateCartItem`, `RemoveCartItem`,
//! `DeleteCart`, with the cart's `uuid` in the content), `GetCartQRS` `{"uuid"}`, and `CheckoutCart`
//! (the order saga's last remote step: the cart is bought, so it goes without releasing its units).

use std::collections::BTreeMap;

use minos::prelude::*;
use minos_ecommerce::{
    aggregate, caller, caught_up, own_or_admin, run_saga, target, uuid_field, written,
};
use serde::Deserialize;

/// A customer's cart.
#[root_entity]
pub struct Cart {
    /// The customer (in the customer service) whose cart it is.
    pub user: Uuid,
    pub entries: EntitySet<CartEntry>,
}

/// Units of one product in a cart.
#[entity]
pub struct CartEntry {
    pub quantity: i64,
    pub product: Ref<Product>,
}

/// A product of the product service, as the cart refers to it.
#[external_entity(name = "Product")]
pub struct Product {
    pub title: String,
    pub description: String,
    pub price: f64,
}

impl Cart {
    /// The entry holding `product`, if any.
    fn entry_of(&self, product: Uuid) -> Option<(Uuid, &CartEntry)> {
        self.entries
            .iter()
            .find(|(_, entry)| entry.product.uuid() == product)
            .map(|(uuid, entry)| (*uuid, entry))
    }

    fn quantity_of(&self, product: Uuid) -> i64 {
        self.entry_of(product)
            .map_or(0, |(_, entry)| entry.quantity)
    }
}

/// The body of the item routes.
#[schema]
#[derive(Deserialize)]
struct Item {
    product_uuid: Uuid,
    quantity: i64,
}

/// The content of `CheckoutCart`: the cart and the units the order bought.
#[schema]
#[derive(Deserialize)]
struct Checkout {
    uuid: Uuid,
    quantities: BTreeMap<Uuid, i64>,
}

async fn own_cart(request: &Request) -> Result<Root<Cart>> {
    let cart = Cart::get(target(request)?).await?;
    own_or_admin(request, cart.user)?;
    Ok(cart)
}

fn item(request: &Request) -> Result<Item> {
    let item: Item = request.content()?;
    if !(1..=1_000_000).contains(&item.quantity) {
        return Err(Error::bad_request(
            "`quantity` must be a whole number from 1 to 1000000",
        ));
    }
    Ok(item)
}

/// Runs `CHANGE_CART`: `product` goes from `from` to `to` units in `cart` (0: not in the cart).
async fn change(
    sagas: &SagaManager,
    cart: &Root<Cart>,
    product: Uuid,
    from: i64,
    to: i64,
) -> Result<Response> {
    let context = SagaContext::new()
        .with("cart", cart.uuid())
        .with("product", product)
        .with("from", from)
        .with("to", to);
    let execution = run_saga(sagas, &CHANGE_CART, context).await?;
    Ok(Response::json(execution.uuid))
}

pub struct CartCommandService;

#[command_service]
impl CartCommandService {
    /// Creates the caller's cart. The original took the owner from the body (`{"user": 1}`); here it is
    /// the token's customer, and a `user` in the body naming someone else is refused.
    #[enroute(broker = "CreateCart", rest = "POST /carts", auth)]
    async fn create_cart(&self, request: Request) -> Result<Response> {
        let named = request
            .json()
            .get("user")
            .and_then(Value::as_str)
            .and_then(|u| u.parse::<Uuid>().ok());
        let user = match named {
            Some(named) => {
                own_or_admin(&request, named)?;
                named
            }
            None => caller(&request)?,
        };
        let cart = Cart::create(Cart {
            user,
            entries: EntitySet::new(),
        })
        .await?;
        Ok(Response::json(aggregate(&cart)?))
    }

    /// Adds `quantity` units of a product, reserving them.
    #[enroute(broker = "CreateCartItem", rest = "POST /carts/{uuid}/items", auth, request = Item)]
    async fn create_cart_item(&self, request: Request) -> Result<Response> {
        let Item {
            product_uuid,
            quantity,
        } = item(&request)?;
        let cart = own_cart(&request).await?;
        let from = cart.quantity_of(product_uuid);
        change(&self.sagas()?, &cart, product_uuid, from, from + quantity).await
    }

    /// Sets the units of a product already in the cart, reserving or releasing the difference.
    #[enroute(broker = "UpdateCartItem", rest = "PUT /carts/{uuid}/items", auth, request = Item)]
    async fn update_cart_item(&self, request: Request) -> Result<Response> {
        let Item {
            product_uuid,
            quantity,
        } = item(&request)?;
        let cart = own_cart(&request).await?;
        let from = cart.quantity_of(product_uuid);
        if from == 0 {
            return Err(Error::bad_request(format!(
                "the product {product_uuid} is not in the cart: add it with POST"
            )));
        }
        change(&self.sagas()?, &cart, product_uuid, from, quantity).await
    }

    /// Removes a product from the cart, releasing its units.
    #[enroute(broker = "RemoveCartItem", rest = "DELETE /carts/{uuid}/items", auth)]
    async fn remove_cart_item(&self, request: Request) -> Result<Response> {
        let product = uuid_field(request.json(), "product_uuid")?;
        let cart = own_cart(&request).await?;
        let from = cart.quantity_of(product);
        if from == 0 {
            return Err(Error::bad_request(format!(
                "the product {product} is not in the cart"
            )));
        }
        change(&self.sagas()?, &cart, product, from, 0).await
    }

    /// Deletes the cart, releasing every unit it holds.
    #[enroute(broker = "DeleteCart", rest = "DELETE /carts/{uuid}", auth)]
    async fn delete_cart(&self, request: Request) -> Result<Response> {
        let cart = own_cart(&request).await?;
        let context = SagaContext::new()
            .with("cart", cart.uuid())
            .with("version", cart.version());
        let execution = run_saga(&self.sagas()?, &DELETE_CART, context).await?;
        Ok(Response::json(execution.uuid))
    }

    /// The order saga's step: the cart was bought (its units are sold now), so it goes without
    /// releasing them, provided it still holds exactly what the order bought.
    #[enroute(broker = "CheckoutCart", request = Checkout)]
    async fn checkout_cart(&self, request: Request) -> Result<Response> {
        let Checkout { uuid, quantities } = request.content()?;
        let cart = Cart::get(uuid)
            .await
            .map_err(|e| Error::bad_request(format!("the cart {uuid} cannot be bought: {e}")))?;
        own_or_admin(&request, cart.user)?;
        let holds: BTreeMap<Uuid, i64> = cart
            .entries
            .iter()
            .map(|(_, entry)| (entry.product.uuid(), entry.quantity))
            .collect();
        if holds != quantities {
            return Err(Error::bad_request(
                "the cart changed while it was being ordered: order again",
            ));
        }
        let answer = aggregate(&cart)?;
        cart.delete().await?;
        Ok(Response::json(answer))
    }
}

/// `{"quantities": {product: units}}` for `ReserveProducts` (negative units release).
fn quantities(units: impl IntoIterator<Item = (Uuid, i64)>) -> Value {
    let map: BTreeMap<String, i64> = units
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(p, n)| (p.to_string(), n))
        .collect();
    json!({ "quantities": map })
}

async fn refused(_ctx: SagaContext, response: SagaResponse) -> Result<SagaContext> {
    Err(Error::bad_request(response.message()))
}

/// CHANGE_CART step 1 (remote): the product service reserves (or releases) the difference.
async fn reserve_difference(ctx: SagaContext) -> Result<SagaRequest> {
    let product: Uuid = ctx.get("product")?;
    let (from, to): (i64, i64) = (ctx.get("from")?, ctx.get("to")?);
    Ok(SagaRequest::new(
        "ReserveProducts",
        quantities([(product, to - from)]),
    ))
}

/// CHANGE_CART step 2 (local): the cart's entry, provided nobody changed it meanwhile.
async fn set_entry(ctx: SagaContext) -> Result<SagaContext> {
    let product: Uuid = ctx.get("product")?;
    let (from, to): (i64, i64) = (ctx.get("from")?, ctx.get("to")?);
    let mut cart = Cart::get(ctx.get("cart")?).await?;
    if cart.quantity_of(product) != from {
        return Err(Error::bad_request("the cart changed meanwhile: try again"));
    }
    match (cart.entry_of(product).map(|(uuid, _)| uuid), to) {
        (Some(entry), 0) => {
            cart.entries.remove(&entry);
        }
        (Some(entry), _) => {
            if let Some(entry) = cart.entries.get_mut(&entry) {
                entry.quantity = to;
            }
        }
        (None, _) => {
            cart.entries.add(CartEntry {
                quantity: to,
                product: Ref::new(product),
            });
        }
    }
    cart.save().await?;
    Ok(ctx)
}

/// DELETE_CART step 1 (remote): the product service releases every unit of the cart.
async fn release_all(ctx: SagaContext) -> Result<SagaRequest> {
    let cart = Cart::get(ctx.get("cart")?).await?;
    Ok(SagaRequest::new(
        "ReserveProducts",
        quantities(
            cart.entries
                .iter()
                .map(|(_, entry)| (entry.product.uuid(), -entry.quantity)),
        ),
    ))
}

/// DELETE_CART step 2 (local): the cart, as it was when its units were released.
async fn delete_cart(ctx: SagaContext) -> Result<SagaContext> {
    let cart = Cart::get(ctx.get("cart")?).await?;
    if cart.version() != ctx.get::<u64>("version")? {
        return Err(Error::bad_request("the cart changed meanwhile: try again"));
    }
    cart.delete().await?;
    Ok(ctx)
}

minos::saga! {
    /// Changes the units of one product in a cart: reserved (or released) in the product service and
    /// written in the cart, both or neither (a refused reservation fails the saga before the cart
    /// changes; a failed cart change rejects the reservation with the transaction).
    pub static CHANGE_CART = Saga::builder()
        .remote_step(reserve_difference)
        .on_error(refused)
        .local_step(set_entry)
        .commit();
}

minos::saga! {
    /// Deletes a cart and releases its units, both or neither.
    pub static DELETE_CART = Saga::builder()
        .remote_step(release_all)
        .on_error(refused)
        .local_step(delete_cart)
        .commit();
}

/// A cart as its readers see it: its state, kept from its events.
#[view]
pub struct CartView {
    #[key]
    pub uuid: Uuid,
    #[index]
    pub user: Uuid,
    pub version: i64,
    /// The entries: `[{"uuid", "product", "quantity"}]`.
    pub entries: Value,
}

/// The products' titles, descriptions and prices, kept from the product service's events.
#[view]
pub struct CartProduct {
    #[key]
    pub uuid: Uuid,
    pub title: String,
    pub description: String,
    pub price: f64,
}

/// The original's `CartDTO`, with the owner.
async fn cart_dto(view: &CartView) -> Result<Value> {
    let entries: Vec<(Uuid, &Value)> = view
        .entries
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let product = entry["product"]
                .as_str()
                .and_then(|u| u.parse().ok())
                .unwrap_or_default();
            (product, &entry["quantity"])
        })
        .collect();
    let uuids: Vec<Uuid> = entries.iter().map(|(product, _)| *product).collect();
    let known: BTreeMap<Uuid, CartProduct> = if uuids.is_empty() {
        BTreeMap::new()
    } else {
        CartProduct::find(Condition::is_in("uuid", uuids))
            .await?
            .into_iter()
            .map(|p| (p.uuid, p))
            .collect()
    };
    let products: Vec<Value> = entries
        .into_iter()
        .map(|(product, quantity)| {
            let known = known.get(&product);
            json!({
                "product_id": product,
                "cart_id": view.uuid,
                "quantity": quantity,
                "title": known.map(|p| &p.title),
                "description": known.map(|p| &p.description),
                "price": known.map(|p| p.price),
            })
        })
        .collect();
    Ok(json!({
        "uuid": view.uuid,
        "version": view.version,
        "user": view.user,
        "products": products,
    }))
}

pub struct CartQueryService;

#[query_service]
impl CartQueryService {
    #[enroute(event = "CartCreated", view = CartView)]
    async fn cart_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let mut state = Default::default();
        event.apply_json(&mut state)?;
        CartView::upsert(&CartView {
            uuid: event.uuid,
            user: minos::serde_json::from_value(state["user"].clone())
                .map_err(|e| Error::with_status(500, format!("CartCreated without user: {e}")))?,
            version: event.version as i64,
            entries: state.remove("entries").unwrap_or_else(|| json!([])),
        })
        .await
    }

    #[enroute(event = "CartUpdated", view = CartView)]
    async fn cart_updated(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let Some(mut view) = CartView::get(&event.uuid).await? else {
            return Ok(());
        };
        let mut state = minos::serde_json::Map::new();
        state.insert("entries".into(), view.entries.take());
        event.apply_json(&mut state)?;
        view.entries = state.remove("entries").unwrap_or_else(|| json!([]));
        view.version = event.version as i64;
        CartView::upsert(&view).await
    }

    #[enroute(event = "CartDeleted", view = CartView)]
    async fn cart_deleted(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        CartView::delete(&event.uuid).await.map(|_| ())
    }

    #[enroute(event = "ProductCreated", view = CartProduct)]
    async fn product_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let product: Product = event.decode_fields()?;
        CartProduct::upsert(&CartProduct {
            uuid: event.uuid,
            title: product.title,
            description: product.description,
            price: product.price,
        })
        .await
    }

    /// A product's new title, description or price shows in every cart holding it.
    #[enroute(event = "ProductUpdated", view = CartProduct)]
    async fn product_updated(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let Some(mut product) = CartProduct::get(&event.uuid).await? else {
            return Ok(());
        };
        if let Some(title) = event.field("title")? {
            product.title = title;
        }
        if let Some(description) = event.field("description")? {
            product.description = description;
        }
        if let Some(price) = event.field("price")? {
            product.price = price;
        }
        CartProduct::upsert(&product).await
    }

    #[enroute(event = "ProductDeleted", view = CartProduct)]
    async fn product_deleted(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        CartProduct::delete(&event.uuid).await.map(|_| ())
    }

    /// A cart with its products (the owner's or an admin's token).
    #[enroute(rest = "GET /carts/{uuid}", broker = "GetCartQRS", auth)]
    async fn get_cart(&self, request: Request) -> Result<Response> {
        let uuid = target(&request)?;
        let version = written::<Cart>(uuid).await?;
        caught_up(|| async move {
            let view = CartView::get(&uuid).await?;
            Ok(match (version, view) {
                (Some(version), Some(view)) => view.version >= version as i64,
                (None, view) => view.is_none(),
                (Some(_), None) => false,
            })
        })
        .await?;
        let Some(view) = CartView::get(&uuid).await? else {
            return Err(Error::not_found(format!("there is no cart {uuid}")));
        };
        own_or_admin(&request, view.user)?;
        Ok(Response::json(cart_dto(&view).await?))
    }
}

fn main() -> minos::Result<()> {
    // The defaults (`MINOS_*` variables set the store, the broker, the registry): see run.sh.
    minos::Launcher::from_config(concat!(env!("CARGO_MANIFEST_DIR"), "/config/cart.yml"))?.run()
}
