//! The product service: the catalogue and its stock. REST (open, as in the original): `POST /products`,
//! `PUT|PATCH /products/{uuid}`, `PUT|PATCH /products/{uuid}/inventory`, `DELETE /products/{uuid}`,
//! `GET /products`, `GET /products/{uuid}`, `GET /products/without-stock`. Broker: `CreateProduct`,
//! `ReserveProducts` and `PurchaseProducts` (the cart's and the order's saga steps; a negative quantity
//! releases), `GetProductsWithoutStock`. The query side keeps `ProductView` from the product events and
//! `ProductReview` (each review's score) from the review service's, and answers each product with the
//! number of its reviews and their average score (`reviews_count`, `reviews_score`).

use std::collections::BTreeMap;

use minos::prelude::*;
use minos_ecommerce::aggregate;
use serde::Deserialize;

/// A product of the catalogue.
#[root_entity]
pub struct Product {
    /// Six upper-case hexadecimal characters, set at creation.
    pub code: String,
    pub title: String,
    pub description: String,
    pub price: f64,
    pub inventory: Inventory,
}

/// The stock of a product: units on hand, reserved by carts, sold.
#[value_object]
pub struct Inventory {
    pub amount: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// The body of `POST /products` and of `CreateProduct`.
#[schema]
#[derive(Deserialize)]
struct NewProduct {
    title: String,
    description: String,
    price: f64,
}

/// The body of `PATCH /products/{uuid}`: the fields to change.
#[schema]
#[derive(Deserialize)]
struct ProductChanges {
    title: Option<String>,
    description: Option<String>,
    price: Option<f64>,
}

/// The body of `PUT /products/{uuid}/inventory`.
#[schema]
#[derive(Deserialize)]
struct SetAmount {
    amount: i64,
}

/// The body of `PATCH /products/{uuid}/inventory`.
#[schema]
#[derive(Deserialize)]
struct ChangeAmount {
    amount_diff: i64,
}

/// The content of `ReserveProducts` and `PurchaseProducts`: units per product uuid.
#[schema]
#[derive(Deserialize)]
struct Quantities {
    quantities: BTreeMap<Uuid, i64>,
}

fn check_price(price: f64) -> Result<()> {
    if !price.is_finite() || price < 0.0 {
        return Err(Error::bad_request("`price` must be a number of at least 0"));
    }
    Ok(())
}

async fn load(request: &Request) -> Result<Root<Product>> {
    Product::get(request.param("uuid")?).await
}

/// The products named in `quantities`, each checked to exist: all of them, or an error naming the
/// missing ones.
async fn products(quantities: &BTreeMap<Uuid, i64>) -> Result<Vec<Root<Product>>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for uuid in quantities.keys() {
        match Product::get(*uuid).await {
            Ok(product) => found.push(product),
            Err(error) if error.is_not_found() || error.is_deleted() => {
                missing.push(uuid.to_string())
            }
            Err(error) => return Err(error),
        }
    }
    if !missing.is_empty() {
        return Err(Error::bad_request(format!(
            "Some products do not exist: {}",
            missing.join(", ")
        )));
    }
    Ok(found)
}

/// Applies `change` to the stock of every product in `quantities` (with its quantity), all or
/// nothing: when it refuses one (returns false), nothing is saved and the error names those refused.
async fn change_stock(
    quantities: &BTreeMap<Uuid, i64>,
    change: impl Fn(&mut Inventory, i64) -> bool,
) -> Result<Response> {
    let mut products = products(quantities).await?;
    let mut short = Vec::new();
    for product in &mut products {
        let wanted = quantities[&product.uuid()];
        if !change(&mut product.inventory, wanted) {
            short.push(product.uuid().to_string());
        }
    }
    if !short.is_empty() {
        return Err(Error::bad_request(format!(
            "There is not enough product amount: {}",
            short.join(", ")
        )));
    }
    for product in &mut products {
        product.save().await?;
    }
    Ok(Response::json(Value::Null))
}

pub struct ProductCommandService;

#[command_service]
impl ProductCommandService {
    /// Creates a product with a random code and an empty inventory; answers the whole product.
    #[enroute(broker = "CreateProduct", rest = "POST /products", request = NewProduct)]
    async fn create_product(&self, request: Request) -> Result<Response> {
        let NewProduct {
            title,
            description,
            price,
        } = request.content()?;
        check_price(price)?;
        let code = Uuid::new_v4().simple().to_string()[..6].to_uppercase();
        let product = Product::create(Product {
            code,
            title,
            description,
            price,
            inventory: Inventory {
                amount: 0,
                reserved: 0,
                sold: 0,
            },
        })
        .await?;
        Ok(Response::json(aggregate(&product)?))
    }

    /// Replaces title, description and price.
    #[enroute(rest = "PUT /products/{uuid}", request = NewProduct)]
    async fn update_product(&self, request: Request) -> Result<Response> {
        let NewProduct {
            title,
            description,
            price,
        } = request.content()?;
        check_price(price)?;
        let mut product = load(&request).await?;
        product.title = title;
        product.description = description;
        product.price = price;
        product.save().await?;
        Ok(Response::json(aggregate(&product)?))
    }

    /// Changes the fields given; no change, no new version.
    #[enroute(rest = "PATCH /products/{uuid}", request = ProductChanges)]
    async fn update_product_diff(&self, request: Request) -> Result<Response> {
        let changes: ProductChanges = request.content()?;
        if let Some(price) = changes.price {
            check_price(price)?;
        }
        let mut product = load(&request).await?;
        if let Some(title) = changes.title {
            product.title = title;
        }
        if let Some(description) = changes.description {
            product.description = description;
        }
        if let Some(price) = changes.price {
            product.price = price;
        }
        product.save().await?;
        Ok(Response::json(aggregate(&product)?))
    }

    /// Sets the units on hand (reserved and sold are kept).
    #[enroute(rest = "PUT /products/{uuid}/inventory", request = SetAmount)]
    async fn update_inventory(&self, request: Request) -> Result<Response> {
        let SetAmount { amount } = request.content()?;
        if amount < 0 {
            return Err(Error::bad_request("`amount` must not be negative"));
        }
        let mut product = load(&request).await?;
        product.inventory.amount = amount;
        product.save().await?;
        Ok(Response::json(aggregate(&product)?))
    }

    /// Adds `amount_diff` units (negative: removes them, never below 0).
    #[enroute(rest = "PATCH /products/{uuid}/inventory", request = ChangeAmount)]
    async fn update_inventory_diff(&self, request: Request) -> Result<Response> {
        let ChangeAmount { amount_diff } = request.content()?;
        let mut product = load(&request).await?;
        let amount = product.inventory.amount.checked_add(amount_diff);
        match amount {
            Some(amount) if amount >= 0 => product.inventory.amount = amount,
            _ => {
                return Err(Error::bad_request(format!(
                    "the product has {} units: cannot change them by {amount_diff}",
                    product.inventory.amount
                )))
            }
        }
        product.save().await?;
        Ok(Response::json(aggregate(&product)?))
    }

    /// Deletes a product; an unknown or deleted one is a 400, as in the original.
    #[enroute(rest = "DELETE /products/{uuid}")]
    async fn delete_product(&self, request: Request) -> Result<Response> {
        match load(&request).await {
            Ok(product) => product.delete().await?,
            Err(error) if error.is_not_found() || error.is_deleted() => {
                return Err(Error::bad_request("The product does not exist."))
            }
            Err(error) => return Err(error),
        }
        Ok(Response::empty())
    }

    /// Reserves units for a cart (a negative quantity releases them): all of them, or none and an
    /// error.
    #[enroute(broker = "ReserveProducts", request = Quantities)]
    async fn reserve_products(&self, request: Request) -> Result<Response> {
        let Quantities { quantities } = request.content()?;
        change_stock(&quantities, |stock, wanted| {
            if stock.amount - stock.reserved < wanted || stock.reserved + wanted < 0 {
                return false;
            }
            stock.reserved += wanted;
            true
        })
        .await
    }

    /// Turns reserved units into sold ones (a negative quantity undoes a purchase): all of them, or
    /// none and an error.
    #[enroute(broker = "PurchaseProducts", request = Quantities)]
    async fn purchase_products(&self, request: Request) -> Result<Response> {
        let Quantities { quantities } = request.content()?;
        change_stock(&quantities, |stock, wanted| {
            if stock.amount < wanted || stock.sold + wanted < 0 {
                return false;
            }
            stock.amount -= wanted;
            stock.reserved = (stock.reserved - wanted).max(0);
            stock.sold += wanted;
            true
        })
        .await
    }
}

/// A product as the catalogue's readers see it (the original's `ProductDTO`), with its reviews.
#[view]
pub struct ProductView {
    #[key]
    pub uuid: Uuid,
    pub code: String,
    pub title: String,
    pub description: String,
    pub price: f64,
    #[index]
    pub inventory_amount: i64,
}

/// The score of each review, by product, kept from the review service's events.
#[view]
pub struct ProductReview {
    #[key]
    pub uuid: Uuid,
    #[index]
    pub product: Uuid,
    pub score: i64,
}

/// What a review event says of the product and the score.
#[derive(Deserialize)]
struct ReviewSeen {
    product: Uuid,
    score: i64,
}

/// The original's `ProductDTO` of each view: with the number of reviews and their average score.
async fn dtos(views: &[ProductView]) -> Result<Vec<Value>> {
    let uuids: Vec<Uuid> = views.iter().map(|v| v.uuid).collect();
    let mut scores: BTreeMap<Uuid, (i64, i64)> = BTreeMap::new();
    if !uuids.is_empty() {
        for review in ProductReview::find(Condition::is_in("product", uuids)).await? {
            let (count, sum) = scores.entry(review.product).or_default();
            *count += 1;
            *sum += review.score;
        }
    }
    Ok(views
        .iter()
        .map(|view| {
            let (count, sum) = scores.get(&view.uuid).copied().unwrap_or_default();
            let average = if count == 0 {
                0.0
            } else {
                sum as f64 / count as f64
            };
            json!({
                "uuid": view.uuid,
                "code": view.code,
                "title": view.title,
                "description": view.description,
                "price": view.price,
                "reviews_count": count,
                "reviews_score": average,
            })
        })
        .collect())
}

pub struct ProductQueryService;

#[query_service]
impl ProductQueryService {
    #[enroute(event = "ProductCreated", view = ProductView)]
    async fn product_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let product: Product = event.decode_fields()?;
        ProductView::upsert(&ProductView {
            uuid: event.uuid,
            code: product.code,
            title: product.title,
            description: product.description,
            price: product.price,
            inventory_amount: product.inventory.amount,
        })
        .await
    }

    #[enroute(event = "ProductUpdated", view = ProductView)]
    async fn product_updated(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let Some(mut view) = ProductView::get(&event.uuid).await? else {
            return Ok(());
        };
        if let Some(title) = event.field("title")? {
            view.title = title;
        }
        if let Some(description) = event.field("description")? {
            view.description = description;
        }
        if let Some(price) = event.field("price")? {
            view.price = price;
        }
        if let Some(inventory) = event.field::<Inventory>("inventory")? {
            view.inventory_amount = inventory.amount;
        }
        ProductView::upsert(&view).await
    }

    #[enroute(event = "ProductDeleted", view = ProductView)]
    async fn product_deleted(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        ProductView::delete(&event.uuid).await?;
        Ok(())
    }

    #[enroute(event = "ReviewCreated", view = ProductReview)]
    async fn review_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let review: ReviewSeen = event.decode_fields()?;
        ProductReview::upsert(&ProductReview {
            uuid: event.uuid,
            product: review.product,
            score: review.score,
        })
        .await
    }

    #[enroute(event = "ReviewUpdated.score", view = ProductReview)]
    async fn review_rescored(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let Some(mut review) = ProductReview::get(&event.uuid).await? else {
            return Ok(());
        };
        if let Some(score) = event.field("score")? {
            review.score = score;
        }
        ProductReview::upsert(&review).await
    }

    #[enroute(event = "ReviewDeleted", view = ProductReview)]
    async fn review_deleted(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        ProductReview::delete(&event.uuid).await.map(|_| ())
    }

    /// Every product, by title.
    #[enroute(rest = "GET /products")]
    async fn get_all_products(&self, _request: Request) -> Result<Response> {
        let products = ProductView::find(Condition::True)
            .order_by(Ordering::asc("title"))
            .await?;
        Ok(Response::json(dtos(&products).await?))
    }

    /// One product, or `null` when there is none (as the original answers).
    #[enroute(rest = "GET /products/{uuid}")]
    async fn get_product_by_uuid(&self, request: Request) -> Result<Response> {
        let uuid: Uuid = request.param("uuid")?;
        let Some(found) = ProductView::get(&uuid).await? else {
            return Ok(Response::json(Value::Null));
        };
        Ok(Response::json(dtos(&[found]).await?.pop()))
    }

    /// The products with no unit on hand.
    #[enroute(
        rest = "GET /products/without-stock",
        broker = "GetProductsWithoutStock"
    )]
    async fn get_products_without_stock(&self, _request: Request) -> Result<Response> {
        let products = ProductView::find(Condition::eq("inventory_amount", 0))
            .order_by(Ordering::asc("title"))
            .await?;
        Ok(Response::json(dtos(&products).await?))
    }
}

fn main() -> minos::Result<()> {
    // The defaults (`MINOS_*` variables set the store, the broker, the registry): see run.sh.
    minos::Launcher::from_config(concat!(env!("CARGO_MANIFEST_DIR"), "/config/product.yml"))?.run()
}
