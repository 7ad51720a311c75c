//! Snapshot queries: conditions, orderings, limits and references.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::super::models::{Customer, Order};
use super::in_scope;
use crate::prelude::*;
use crate::store::{EventFilter, Query, StoreError};
use crate::Error;

/// customer, total, quantity, paid, note, tags, city
type SeedRow = (
    &'static str,
    f64,
    i64,
    bool,
    Option<&'static str>,
    &'static [&'static str],
    &'static str,
);

async fn seed(repo: &Repository) -> Vec<Root<Order>> {
    let mut out = Vec::new();
    let rows: [SeedRow; 4] = [
        ("ada", 10.0, 1, true, Some("gift"), &["red", "big"], "Paris"),
        ("bob", 20.5, 2, false, None, &["blue"], "Lyon"),
        ("Cy", 5.25, 3, true, Some("Gift wrap"), &[], "Paris"),
        ("dee_x", 20.5, 4, false, Some("x%y"), &["red"], "Nice"),
    ];
    for (customer, total, quantity, paid, note, tags, city) in rows {
        let mut order = Order::sample(customer, total);
        order.quantity = quantity;
        order.paid = paid;
        order.note = note.map(str::to_owned);
        order.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        order.address.city = city.into();
        order.extra = BTreeMap::from([("score".to_owned(), quantity * 10)]);
        out.push(repo.create(order).await.unwrap());
    }
    out
}

async fn customers(repo: &Repository, condition: Condition) -> Vec<String> {
    let query = Query {
        condition,
        ..Query::default()
    };
    let found = repo.find::<Order>(&query).await.unwrap();
    found.iter().map(|o| o.customer.clone()).collect()
}

/// `=`, `≠`, `<`, `≤`, `>`, `≥` on numbers, strings, booleans, nulls and dotted paths.
pub async fn comparisons_on_scalars_and_paths(repo: Repository) {
    seed(&repo).await;
    assert_eq!(
        customers(&repo, Condition::eq("customer", "bob")).await,
        ["bob"]
    );
    assert_eq!(
        customers(&repo, Condition::eq("total", 20.5)).await,
        ["bob", "dee_x"]
    );
    assert_eq!(customers(&repo, Condition::eq("quantity", 3)).await, ["Cy"]);
    assert_eq!(
        customers(&repo, Condition::eq("paid", true)).await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::ne("paid", true)).await,
        ["bob", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::eq("note", Value::Null)).await,
        ["bob"]
    );
    assert_eq!(
        customers(&repo, Condition::ne("note", "gift")).await,
        ["bob", "Cy", "dee_x"]
    );
    assert_eq!(customers(&repo, Condition::lt("total", 10.0)).await, ["Cy"]);
    assert_eq!(
        customers(&repo, Condition::le("total", 10)).await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::gt("quantity", 2)).await,
        ["Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::ge("quantity", 2)).await,
        ["bob", "Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::lt("customer", "bob")).await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::eq("address.city", "Paris")).await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::gt("extra.score", 25)).await,
        ["Cy", "dee_x"]
    );
    assert!(customers(&repo, Condition::eq("address.nowhere", "x"))
        .await
        .is_empty());
}

/// One rule on every store: `ne` is `!eq` (null and missing fields included), `eq(f, null)` matches
/// missing or null fields, values of different kinds are never equal and never ordered.
pub async fn one_rule_for_nulls_and_mismatched_kinds(repo: Repository) {
    seed(&repo).await;
    let all = ["ada", "bob", "Cy", "dee_x"];
    // Null.
    assert_eq!(
        customers(&repo, Condition::ne("note", Value::Null)).await,
        ["ada", "Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::eq("nowhere", Value::Null)).await,
        all
    );
    assert!(customers(&repo, Condition::ne("nowhere", Value::Null))
        .await
        .is_empty());
    assert_eq!(customers(&repo, Condition::ne("nowhere", "x")).await, all);
    for cmp in [
        Condition::lt("note", Value::Null),
        Condition::ge("note", Value::Null),
        Condition::gt("nowhere", 1),
    ] {
        assert!(customers(&repo, cmp.clone()).await.is_empty(), "{cmp:?}");
    }
    // `ne` and `!eq` agree, and so do `!ne` and `eq`.
    for (field, value) in [
        ("note", json!("gift")),
        ("note", Value::Null),
        ("paid", json!(true)),
        ("quantity", json!(2)),
        ("nowhere", json!(1)),
    ] {
        assert_eq!(
            customers(&repo, Condition::ne(field, value.clone())).await,
            customers(&repo, !Condition::eq(field, value.clone())).await,
            "ne and !eq on {field} {value}"
        );
        assert_eq!(
            customers(&repo, !Condition::ne(field, value.clone())).await,
            customers(&repo, Condition::eq(field, value.clone())).await,
            "!ne and eq on {field} {value}"
        );
    }
    // A string is not a number, a number is not a boolean, on data and meta fields alike.
    assert!(customers(&repo, Condition::eq("version", "1"))
        .await
        .is_empty());
    assert_eq!(customers(&repo, Condition::eq("version", 1)).await, all);
    assert!(customers(&repo, Condition::eq("quantity", "1"))
        .await
        .is_empty());
    assert!(customers(&repo, Condition::eq("paid", 1)).await.is_empty());
    assert!(customers(&repo, Condition::eq("paid", 0)).await.is_empty());
    assert!(customers(&repo, Condition::eq("customer", 1))
        .await
        .is_empty());
    assert!(customers(&repo, Condition::gt("customer", 1))
        .await
        .is_empty());
    assert!(customers(&repo, Condition::lt("quantity", "9"))
        .await
        .is_empty());
    assert!(customers(&repo, Condition::lt("paid", 5)).await.is_empty());
    assert!(customers(&repo, Condition::gt("version", "0"))
        .await
        .is_empty());
    assert_eq!(customers(&repo, Condition::ne("paid", 1)).await, all);
    // Numbers compare by value; booleans order false < true.
    assert_eq!(
        customers(&repo, Condition::eq("quantity", 3.0)).await,
        ["Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::gt("paid", false)).await,
        ["ada", "Cy"]
    );
    // `is_in` is any `eq`: a null candidate matches missing or null fields.
    assert_eq!(
        customers(
            &repo,
            Condition::is_in("note", [json!("gift"), Value::Null])
        )
        .await,
        ["ada", "bob"]
    );
    assert!(customers(&repo, Condition::is_in("quantity", ["1", "2"]))
        .await
        .is_empty());
    // Arrays and objects: equal as values, never ordered.
    assert_eq!(
        customers(&repo, Condition::eq("tags", json!(["red", "big"]))).await,
        ["ada"]
    );
    assert_eq!(
        customers(
            &repo,
            Condition::eq("address", json!({"city": "Nice", "zip": "69001"}))
        )
        .await,
        ["dee_x"]
    );
    assert!(customers(&repo, Condition::gt("tags", json!(["a"])))
        .await
        .is_empty());
    // Membership and patterns follow the same kinds; their negations include missing fields.
    assert!(customers(&repo, Condition::contains("tags", 1))
        .await
        .is_empty());
    assert_eq!(
        customers(&repo, !Condition::like("note", "gift")).await,
        ["bob", "Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, !Condition::like("nowhere", "%")).await,
        all
    );
    assert_eq!(
        customers(&repo, !Condition::contains("nowhere", "red")).await,
        all
    );
}

/// TRUE, FALSE, AND, OR, NOT and their empty forms.
pub async fn boolean_combinations(repo: Repository) {
    seed(&repo).await;
    assert_eq!(customers(&repo, Condition::True).await.len(), 4);
    assert!(customers(&repo, Condition::False).await.is_empty());
    assert_eq!(
        customers(
            &repo,
            Condition::eq("paid", true) & Condition::eq("address.city", "Paris")
        )
        .await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(
            &repo,
            Condition::eq("customer", "ada") | Condition::gt("quantity", 3)
        )
        .await,
        ["ada", "dee_x"]
    );
    assert_eq!(
        customers(&repo, !Condition::eq("paid", true)).await,
        ["bob", "dee_x"]
    );
    assert_eq!(
        customers(&repo, !Condition::eq("note", "gift")).await,
        ["bob", "Cy", "dee_x"]
    );
    assert_eq!(customers(&repo, Condition::and([])).await.len(), 4);
    assert!(customers(&repo, Condition::or([])).await.is_empty());
    assert_eq!(
        customers(&repo, !(Condition::False | Condition::eq("quantity", 1))).await,
        ["bob", "Cy", "dee_x"]
    );
}

/// IN, CONTAINS (array membership) and LIKE (full, case-sensitive match, `%` and `_`).
pub async fn in_contains_and_like(repo: Repository) {
    seed(&repo).await;
    assert_eq!(
        customers(&repo, Condition::is_in("quantity", [1, 4, 9])).await,
        ["ada", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::is_in("customer", ["Cy", "zed"])).await,
        ["Cy"]
    );
    assert!(
        customers(&repo, Condition::is_in("customer", Vec::<String>::new()))
            .await
            .is_empty()
    );
    assert_eq!(
        customers(&repo, Condition::contains("tags", "red")).await,
        ["ada", "dee_x"]
    );
    assert!(customers(&repo, Condition::contains("customer", "a"))
        .await
        .is_empty());
    assert_eq!(
        customers(&repo, Condition::like("note", "gift")).await,
        ["ada"]
    );
    assert_eq!(
        customers(&repo, Condition::like("note", "%ift%")).await,
        ["ada", "Cy"]
    );
    assert_eq!(
        customers(&repo, Condition::like("note", "Gift%")).await,
        ["Cy"]
    );
    assert!(customers(&repo, Condition::like("note", "gif"))
        .await
        .is_empty());
    assert_eq!(
        customers(&repo, Condition::like("customer", "_o_")).await,
        ["bob"]
    );
    assert_eq!(
        customers(&repo, Condition::like("customer", "dee_%")).await,
        ["dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::like("note", "x%")).await,
        ["dee_x"]
    );
    assert!(customers(&repo, Condition::like("quantity", "1"))
        .await
        .is_empty());
}

/// `uuid`, `version`, `created_at` and `updated_at` can be filtered and sorted on.
pub async fn meta_fields_are_queryable(repo: Repository) {
    let orders = seed(&repo).await;
    let mut bob = repo.get::<Order>(orders[1].uuid()).await.unwrap();
    bob.quantity = 20;
    repo.save(&mut bob).await.unwrap();
    assert_eq!(customers(&repo, Condition::eq("version", 2)).await, ["bob"]);
    assert_eq!(
        customers(&repo, Condition::eq("uuid", orders[2].uuid().to_string())).await,
        ["Cy"]
    );
    let since = crate::store::format_time(orders[2].created_at());
    assert_eq!(
        customers(&repo, Condition::ge("created_at", since)).await,
        ["Cy", "dee_x"]
    );
    // Uuids, times and references are condition values as they are, no `.to_string()`.
    assert_eq!(
        customers(&repo, Condition::eq("uuid", orders[2].uuid())).await,
        ["Cy"]
    );
    let uuids: Vec<Uuid> = orders.iter().skip(2).map(|o| o.uuid()).collect();
    assert_eq!(
        customers(&repo, Condition::is_in("uuid", uuids)).await,
        ["Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::ge("created_at", orders[2].created_at())).await,
        ["Cy", "dee_x"]
    );
    assert_eq!(
        customers(&repo, Condition::lt("created_at", orders[1].created_at())).await,
        ["ada"]
    );
    assert_eq!(
        customers(&repo, Condition::eq("customer_ref", None::<Ref<Customer>>))
            .await
            .len(),
        4
    );
    let query = Query {
        ordering: Some(Ordering::desc("updated_at")),
        limit: Some(1),
        ..Query::default()
    };
    assert_eq!(repo.find::<Order>(&query).await.unwrap()[0].customer, "bob");
}

/// Ordering ascending and descending (ties keep insertion order), and limit.
pub async fn ordering_and_limit(repo: Repository) {
    seed(&repo).await;
    in_scope(&repo, async {
        let names =
            |found: Vec<Root<Order>>| found.iter().map(|o| o.customer.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(Order::get_all().await.unwrap()),
            ["ada", "bob", "Cy", "dee_x"]
        );
        assert_eq!(
            names(
                Order::get_all()
                    .order_by(Ordering::asc("total"))
                    .await
                    .unwrap()
            ),
            ["Cy", "ada", "bob", "dee_x"]
        );
        assert_eq!(
            names(
                Order::get_all()
                    .order_by(Ordering::desc("quantity"))
                    .limit(2)
                    .await
                    .unwrap()
            ),
            ["dee_x", "Cy"]
        );
        assert_eq!(
            names(
                Order::get_all()
                    .order_by(Ordering::asc("customer"))
                    .await
                    .unwrap()
            ),
            ["Cy", "ada", "bob", "dee_x"]
        );
        assert_eq!(
            names(
                Order::find(Condition::eq("paid", false))
                    .order_by(Ordering::desc("address.city"))
                    .await
                    .unwrap()
            ),
            ["dee_x", "bob"]
        );
        assert_eq!(
            names(
                Order::get_all()
                    .order_by(Ordering::asc("note"))
                    .await
                    .unwrap()
            ),
            ["bob", "Cy", "ada", "dee_x"]
        );
        assert!(Order::get_all().limit(0).await.unwrap().is_empty());
    })
    .await
}

/// Values that look like SQL are compared as plain values.
pub async fn query_values_are_inert(repo: Repository) {
    seed(&repo).await;
    let attacks = [
        "' OR '1'='1",
        "ada' --",
        "\"); DROP TABLE snapshots; --",
        "%' OR 1=1 OR customer LIKE '%",
    ];
    for attack in attacks {
        assert!(
            customers(&repo, Condition::eq("customer", attack))
                .await
                .is_empty(),
            "{attack}"
        );
        assert!(
            customers(&repo, Condition::like("customer", attack))
                .await
                .is_empty(),
            "{attack}"
        );
        assert!(
            customers(&repo, Condition::is_in("customer", [attack]))
                .await
                .is_empty(),
            "{attack}"
        );
    }
    // The data is still all there.
    assert_eq!(customers(&repo, Condition::True).await.len(), 4);
    let mut evil = Order::sample("x'); DELETE FROM events; --", 1.0);
    evil.note = Some("\"}, \"paid\": true".into());
    let evil = repo.create(evil).await.unwrap();
    let read = repo.get::<Order>(evil.uuid()).await.unwrap();
    assert_eq!(read.customer, "x'); DELETE FROM events; --");
    assert!(!read.paid);
    assert_eq!(
        customers(
            &repo,
            Condition::eq("customer", "x'); DELETE FROM events; --")
        )
        .await
        .len(),
        1
    );
}

/// Field paths that are not dotted identifiers are refused before reaching the backend.
pub async fn invalid_field_paths_are_rejected(repo: Repository) {
    seed(&repo).await;
    for path in ["customer') OR 1=1 --", "a..b", "", "$.customer", "a b"] {
        let query = Query {
            condition: Condition::eq(path, "x"),
            ..Query::default()
        };
        let error = repo.find::<Order>(&query).await.unwrap_err();
        assert!(
            matches!(error, Error::Store(StoreError::InvalidQuery(_))),
            "{path}: {error}"
        );
        assert_eq!(error.status(), 400);
        let ordered = Query {
            ordering: Some(Ordering::asc(path)),
            ..Query::default()
        };
        assert!(repo.find::<Order>(&ordered).await.is_err(), "{path}");
    }
}

/// `find_one` returns the first match, or a not-found error.
pub async fn find_one_reports_no_match(repo: Repository) {
    seed(&repo).await;
    in_scope(&repo, async {
        let found = Order::find_one(Condition::eq("quantity", 2)).await.unwrap();
        assert_eq!(found.customer, "bob");
        let error = Order::find_one(Condition::eq("quantity", 99))
            .await
            .unwrap_err();
        assert!(error.is_not_found(), "{error}");
    })
    .await
}

/// `Foo::find(..)` and `Foo::get_all()` are futures: they can be handed to anything that takes one,
/// and run on the repository of the task that polls them.
pub async fn queries_are_futures(repo: Repository) {
    seed(&repo).await;
    let all = repo.clone().scope(Order::get_all()).await.unwrap();
    assert_eq!(all.len(), 4);
    let query = Order::find(Condition::eq("paid", true))
        .order_by(crate::Ordering::desc("quantity"))
        .limit(1);
    let spawned = tokio::spawn(repo.clone().scope(query))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spawned.len(), 1);
    assert_eq!(spawned[0].customer, "Cy");
    let no_repository = tokio::spawn(Order::get_all()).await.unwrap().unwrap_err();
    assert!(
        matches!(no_repository, Error::NoRepository),
        "{no_repository}"
    );
}

/// A `Ref` is stored as the uuid alone and reads back unresolved.
pub async fn references_store_only_the_uuid(repo: Repository) {
    in_scope(&repo, async {
        let customer = Customer::create(Customer { name: "ada".into() })
            .await
            .unwrap();
        let mut order = Order::sample("ada", 1.0);
        order.customer_ref = Some(Ref::resolved(customer.clone()));
        let order = Order::create(order).await.unwrap();
        let events = repo.events(order.uuid()).await.unwrap();
        let diff = events[0]
            .fields_diff
            .iter()
            .find(|d| d.name == "customer_ref")
            .unwrap();
        assert_eq!(diff.value, json!(customer.uuid().to_string()));
        let read = Order::get(order.uuid()).await.unwrap();
        let reference = read.customer_ref.as_ref().unwrap();
        assert_eq!(reference.uuid(), customer.uuid());
        assert!(!reference.is_resolved());
        let found = Order::find(Condition::eq("customer_ref", customer.uuid().to_string()))
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
    })
    .await
}

/// The JSON entry point refuses caller-supplied identity, version and timestamps.
pub async fn create_json_rejects_caller_identity(repo: Repository) {
    for key in crate::RESERVED_FIELDS {
        let mut fields = serde_json::Map::new();
        fields.insert("name".into(), json!("ada"));
        fields.insert(key.into(), json!(1));
        let error = repo.create_json("Customer", fields).await.unwrap_err();
        assert!(
            matches!(error, Error::ReservedField { ref field } if field == key),
            "{error}"
        );
        assert_eq!(error.status(), 400);
    }
    assert!(repo
        .store()
        .events(&EventFilter::default())
        .await
        .unwrap()
        .is_empty());
    let mut fields = serde_json::Map::new();
    fields.insert("name".into(), json!("ada"));
    let snapshot = repo.create_json("Customer", fields).await.unwrap();
    let read = repo.get::<Customer>(snapshot.uuid).await.unwrap();
    assert_eq!(read.name, "ada");
}
