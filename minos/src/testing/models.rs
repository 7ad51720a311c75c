//! The models the conformance suite stores: sample models covering every supported kind of field.

use std::collections::BTreeMap;

use crate::prelude::*;

/// An order: scalars, options, lists, maps, a nested value object, sets and a reference.
#[root_entity(crate = "crate")]
pub struct Order {
    /// Customer name.
    pub customer: String,
    /// Total price.
    pub total: f64,
    /// Item count.
    pub quantity: i64,
    /// Paid yet.
    pub paid: bool,
    /// Free text.
    pub note: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Where it goes.
    pub address: Address,
    /// Order lines (entities).
    pub lines: EntitySet<Line>,
    /// Labels (value objects).
    pub labels: ValueObjectSet<Label>,
    /// The customer's root entity.
    pub customer_ref: Option<Ref<Customer>>,
    /// Free counters.
    pub extra: BTreeMap<String, i64>,
    /// When it was placed.
    pub placed: DateTime<Utc>,
}

/// A postal address.
#[value_object(crate = "crate")]
pub struct Address {
    /// City.
    pub city: String,
    /// Postal code.
    pub zip: String,
}

/// One line of an order.
#[entity(crate = "crate")]
pub struct Line {
    /// Product name.
    pub product: String,
    /// How many.
    pub amount: i64,
}

/// A label.
#[value_object(crate = "crate")]
pub struct Label {
    /// Its text.
    pub text: String,
}

/// A customer.
#[root_entity(crate = "crate")]
pub struct Customer {
    /// Name.
    pub name: String,
}

impl Order {
    /// An order with the given customer and total, and everything else empty.
    pub fn sample(customer: &str, total: f64) -> Order {
        Order {
            customer: customer.to_owned(),
            total,
            quantity: 1,
            paid: false,
            note: None,
            tags: Vec::new(),
            address: Address {
                city: "Lyon".into(),
                zip: "69001".into(),
            },
            lines: EntitySet::new(),
            labels: ValueObjectSet::new(),
            customer_ref: None,
            extra: BTreeMap::new(),
            placed: crate::store::now(),
        }
    }
}
