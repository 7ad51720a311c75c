//! The review service: customers review products.
//!
//! - `POST /reviews` (and `CreateReview`) `{"product", "title", "description", "score"}` with the
//!   customer's token: one review per product and customer, a score from 1 to 5, of a product that
//!   exists. Answers the review (`{"uuid", "version", "created_at", "updated_at", "product", "user",
//!   "title", "description", "score"}`).
//! - `PUT /reviews/{uuid}` (and `UpdateReview`) changes `title`, `description` or `score`: the
//!   review's author (or an admin) only; its product and author stay.
//! - Open reads of the query side (the original's `ReviewDTO`: `{"uuid", "product_uuid", "user_uuid",
//!   "title", "description", "score", "product_title", "name", "date"}`, where the product's title and
//!   the customer's name are kept current from their services' events):
//!   `GET /reviews/product/{uuid}` (`GetProductReviews`), `GET /reviews/user/{uuid}`
//!   (`GetCustomerReviews`), `GET /reviews/product/{uuid}/score?order=asc|desc&limit=N`
//!   (`GetTopProductRating`), `GET /reviews/score?order=asc|desc&limit=N` (`GetTopRatedProducts`:
//!   `[{"product_uuid", "product_title", "average"}]`) and `GET /reviews/last?limit=N`
//!   (`GetLastReviews`). `order` and `limit` are read from the query string (or, as the original
//!   read them, from a JSON body).

use std::collections::BTreeMap;

use minos::prelude::*;
use minos_ecommerce::{aggregate, caller, micros, option, own_or_admin, target};
use serde::Deserialize;

/// A review of a product by a customer.
#[root_entity]
pub struct Review {
    pub product: Ref<Product>,
    pub user: Ref<Customer>,
    pub title: String,
    pub description: String,
    /// From 1 to 5.
    pub score: i64,
}

#[external_entity(name = "Product")]
pub struct Product {
    pub title: String,
}

#[external_entity(name = "Customer")]
pub struct Customer {
    pub name: String,
}

/// The body of `POST /reviews`.
#[schema]
#[derive(Deserialize)]
struct NewReview {
    product: Uuid,
    user: Option<Uuid>,
    title: String,
    description: String,
    score: i64,
}

/// The body of `PUT /reviews/{uuid}`: the fields to change.
#[schema]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewChanges {
    #[allow(dead_code)]
    uuid: Option<Value>,
    title: Option<String>,
    description: Option<String>,
    score: Option<i64>,
}

fn check_score(score: i64) -> Result<()> {
    if !(1..=5).contains(&score) {
        return Err(Error::bad_request(
            "`score` must be a whole number from 1 to 5",
        ));
    }
    Ok(())
}

fn check_text(name: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() || text.chars().count() > 10_000 {
        return Err(Error::bad_request(format!(
            "`{name}` must be a text of 1 to 10000 characters"
        )));
    }
    Ok(())
}

pub struct ReviewCommandService;

#[command_service]
impl ReviewCommandService {
    /// Reviews a product as the caller.
    #[enroute(broker = "CreateReview", rest = "POST /reviews", auth, request = NewReview)]
    async fn create_review(&self, request: Request) -> Result<Response> {
        let review: NewReview = request.content()?;
        let user = review.user.unwrap_or(caller(&request)?);
        own_or_admin(&request, user)?;
        check_score(review.score)?;
        check_text("title", &review.title)?;
        check_text("description", &review.description)?;
        let mut product: Ref<Product> = Ref::new(review.product);
        if let Err(error) = product.resolve().await {
            return Err(if matches!(error.status(), 404 | 410) {
                Error::bad_request(format!("there is no product {}", review.product))
            } else {
                error
            });
        }
        let earlier =
            Review::find(Condition::eq("product", review.product) & Condition::eq("user", user))
                .limit(1)
                .await?;
        if let Some(earlier) = earlier.first() {
            return Err(Error::bad_request(format!(
                "this customer already reviewed this product: change the review with PUT /reviews/{}",
                earlier.uuid()
            )));
        }
        let created = Review::create(Review {
            product: Ref::new(review.product),
            user: Ref::new(user),
            title: review.title,
            description: review.description,
            score: review.score,
        })
        .await?;
        Ok(Response::json(aggregate(&created)?))
    }

    /// Changes a review's title, description or score (its author, or an admin).
    #[enroute(broker = "UpdateReview", rest = "PUT /reviews/{uuid}", auth, request = ReviewChanges)]
    async fn update_review(&self, request: Request) -> Result<Response> {
        let changes: ReviewChanges = request.content().map_err(|e| {
            Error::bad_request(format!(
                "{e}: a review's `title`, `description` and `score` can change, not its product or author"
            ))
        })?;
        let mut review = Review::get(target(&request)?).await?;
        own_or_admin(&request, review.user.uuid())?;
        if let Some(score) = changes.score {
            check_score(score)?;
            review.score = score;
        }
        if let Some(title) = changes.title {
            check_text("title", &title)?;
            review.title = title;
        }
        if let Some(description) = changes.description {
            check_text("description", &description)?;
            review.description = description;
        }
        review.save().await?;
        Ok(Response::json(aggregate(&review)?))
    }
}

/// A review as its readers see it.
#[view]
pub struct ReviewView {
    #[key]
    pub uuid: Uuid,
    #[index]
    pub product_uuid: Uuid,
    #[index]
    pub user_uuid: Uuid,
    pub title: String,
    pub description: String,
    pub score: i64,
    #[index]
    pub date: DateTime<Utc>,
}

/// The products' titles, kept from the product service's events.
#[view]
pub struct ReviewedProduct {
    #[key]
    pub uuid: Uuid,
    pub title: String,
}

/// The customers' names, kept from the customer service's events.
#[view]
pub struct Reviewer {
    #[key]
    pub uuid: Uuid,
    pub name: String,
}

async fn dtos(views: &[ReviewView]) -> Result<Vec<Value>> {
    if views.is_empty() {
        return Ok(Vec::new());
    }
    let products: Vec<Uuid> = views.iter().map(|v| v.product_uuid).collect();
    let users: Vec<Uuid> = views.iter().map(|v| v.user_uuid).collect();
    let titles: BTreeMap<Uuid, String> = ReviewedProduct::find(Condition::is_in("uuid", products))
        .await?
        .into_iter()
        .map(|p| (p.uuid, p.title))
        .collect();
    let names: BTreeMap<Uuid, String> = Reviewer::find(Condition::is_in("uuid", users))
        .await?
        .into_iter()
        .map(|r| (r.uuid, r.name))
        .collect();
    Ok(views
        .iter()
        .map(|view| {
            json!({
                "uuid": view.uuid,
                "product_uuid": view.product_uuid,
                "user_uuid": view.user_uuid,
                "title": view.title,
                "description": view.description,
                "score": view.score,
                "product_title": titles.get(&view.product_uuid),
                "name": names.get(&view.user_uuid),
                "date": micros(view.date),
            })
        })
        .collect())
}

/// `order`: `asc` (the default) or `desc`.
fn descending(request: &Request) -> Result<bool> {
    let order: String = option(request, "order", "asc".to_owned())?;
    match order.as_str() {
        "asc" => Ok(false),
        "desc" => Ok(true),
        other => Err(Error::bad_request(format!(
            "`order` must be `asc` or `desc`, not `{other}`"
        ))),
    }
}

fn limit(request: &Request, default: u64) -> Result<u64> {
    let limit: u64 = option(request, "limit", default)?;
    if !(1..=1000).contains(&limit) {
        return Err(Error::bad_request("`limit` must be from 1 to 1000"));
    }
    Ok(limit)
}

pub struct ReviewQueryService;

#[query_service]
impl ReviewQueryService {
    #[enroute(event = "ReviewCreated", view = ReviewView)]
    async fn review_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let review: Review = event.decode_fields()?;
        ReviewView::upsert(&ReviewView {
            uuid: event.uuid,
            product_uuid: review.product.uuid(),
            user_uuid: review.user.uuid(),
            title: review.title,
            description: review.description,
            score: review.score,
            date: event.created_at,
        })
        .await
    }

    #[enroute(event = "ReviewUpdated", view = ReviewView)]
    async fn review_updated(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let Some(mut view) = ReviewView::get(&event.uuid).await? else {
            return Ok(());
        };
        if let Some(title) = event.field("title")? {
            view.title = title;
        }
        if let Some(description) = event.field("description")? {
            view.description = description;
        }
        if let Some(score) = event.field("score")? {
            view.score = score;
        }
        ReviewView::upsert(&view).await
    }

    #[enroute(event = "ReviewDeleted", view = ReviewView)]
    async fn review_deleted(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        ReviewView::delete(&event.uuid).await.map(|_| ())
    }

    #[enroute(event = "ProductCreated", view = ReviewedProduct)]
    async fn product_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let product: Product = event.decode_fields()?;
        ReviewedProduct::upsert(&ReviewedProduct {
            uuid: event.uuid,
            title: product.title,
        })
        .await
    }

    #[enroute(event = "ProductUpdated.title", view = ReviewedProduct)]
    async fn product_renamed(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        if let Some(title) = event.field::<String>("title")? {
            ReviewedProduct::upsert(&ReviewedProduct {
                uuid: event.uuid,
                title,
            })
            .await?;
        }
        Ok(())
    }

    #[enroute(event = "CustomerCreated", view = Reviewer)]
    async fn customer_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let customer: Customer = event.decode_fields()?;
        Reviewer::upsert(&Reviewer {
            uuid: event.uuid,
            name: customer.name,
        })
        .await
    }

    #[enroute(event = "CustomerUpdated.name", view = Reviewer)]
    async fn customer_renamed(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        if let Some(name) = event.field::<String>("name")? {
            Reviewer::upsert(&Reviewer {
                uuid: event.uuid,
                name,
            })
            .await?;
        }
        Ok(())
    }

    /// A product's reviews, oldest first.
    #[enroute(rest = "GET /reviews/product/{uuid}", broker = "GetProductReviews")]
    async fn get_product_reviews(&self, request: Request) -> Result<Response> {
        let product = target(&request)?;
        let found = ReviewView::find(Condition::eq("product_uuid", product))
            .order_by(Ordering::asc("date"))
            .await?;
        Ok(Response::json(dtos(&found).await?))
    }

    /// A customer's reviews, oldest first.
    #[enroute(rest = "GET /reviews/user/{uuid}", broker = "GetCustomerReviews")]
    async fn get_user_reviews(&self, request: Request) -> Result<Response> {
        let user = target(&request)?;
        let found = ReviewView::find(Condition::eq("user_uuid", user))
            .order_by(Ordering::asc("date"))
            .await?;
        Ok(Response::json(dtos(&found).await?))
    }

    /// A product's reviews by score (`order`, default `asc`), `limit` of them (default 1).
    #[enroute(
        rest = "GET /reviews/product/{uuid}/score",
        broker = "GetTopProductRating"
    )]
    async fn get_product_score_reviews(&self, request: Request) -> Result<Response> {
        let product = target(&request)?;
        let found = ReviewView::find(Condition::eq("product_uuid", product))
            .order_by(if descending(&request)? {
                Ordering::desc("score")
            } else {
                Ordering::asc("score")
            })
            .order_by(Ordering::asc("date"))
            .limit(limit(&request, 1)?)
            .await?;
        Ok(Response::json(dtos(&found).await?))
    }

    /// Products by their average score (`order`, default `asc`), `limit` of them (default 10).
    #[enroute(rest = "GET /reviews/score", broker = "GetTopRatedProducts")]
    async fn get_reviews_score(&self, request: Request) -> Result<Response> {
        let descending = descending(&request)?;
        let limit = limit(&request, 10)?;
        let mut sums: BTreeMap<Uuid, (i64, i64)> = BTreeMap::new();
        for review in ReviewView::all().await? {
            let (sum, count) = sums.entry(review.product_uuid).or_default();
            *sum += review.score;
            *count += 1;
        }
        let titles: BTreeMap<Uuid, String> = if sums.is_empty() {
            BTreeMap::new()
        } else {
            ReviewedProduct::find(Condition::is_in(
                "uuid",
                sums.keys().copied().collect::<Vec<_>>(),
            ))
            .await?
            .into_iter()
            .map(|p| (p.uuid, p.title))
            .collect()
        };
        let mut ratings: Vec<(Uuid, Option<&String>, f64)> = sums
            .iter()
            .map(|(product, (sum, count))| {
                (*product, titles.get(product), *sum as f64 / *count as f64)
            })
            .collect();
        ratings.sort_by(|a, b| {
            let by = a.2.total_cmp(&b.2);
            if descending {
                by.reverse()
            } else {
                by
            }
        });
        ratings.truncate(limit as usize);
        Ok(Response::json(
            ratings
                .into_iter()
                .map(|(product, title, average)| {
                    json!({"product_uuid": product, "product_title": title, "average": average})
                })
                .collect::<Vec<_>>(),
        ))
    }

    /// The newest reviews, `limit` of them (default 1).
    #[enroute(rest = "GET /reviews/last", broker = "GetLastReviews")]
    async fn get_last_reviews(&self, request: Request) -> Result<Response> {
        let found = ReviewView::all()
            .order_by(Ordering::desc("date"))
            .limit(limit(&request, 1)?)
            .await?;
        Ok(Response::json(dtos(&found).await?))
    }
}

fn main() -> minos::Result<()> {
    // The defaults (`MINOS_*` variables set the store, the broker, the registry): see run.sh.
    minos::Launcher::from_config(concat!(env!("CARGO_MANIFEST_DIR"), "/config/review.yml"))?.run()
}
