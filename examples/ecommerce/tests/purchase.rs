//! The whole application through the gateway only, on processes over PostgreSQL and Kafka: customers
//! register and log in, fill carts (the cart sagas reserve stock), order (the order saga: ticket →
//! purchase → payment → cart closed → order) and review; the failure paths leave nothing behind.

mod support;

use std::time::Duration;

use minos_support::http::Client;
use minos_support::process::eventually;
use serde_json::{json, Value};
use support::{login, register};

/// A registered, logged-in customer: (uuid, an API client with their token).
fn customer(api: &Client, name: &str) -> (String, Client) {
    let username = format!(
        "{name}-{}",
        &minos::Uuid::new_v4().simple().to_string()[..8]
    );
    let (status, registered) = register(api, &username, name);
    assert_eq!(status, 200, "{registered}");
    let (status, logged_in) = login(api, &username, "correct horse");
    assert_eq!(status, 200, "{logged_in}");
    (
        registered["user"].as_str().unwrap().to_owned(),
        api.clone().with_token(logged_in["token"].as_str().unwrap()),
    )
}

fn call(api: &Client, method: &str, path: &str, body: Value) -> (u16, Value) {
    let answer = api
        .request(method, path, Some(&body.to_string()))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (answer.status, answer.json())
}

fn ok(api: &Client, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = call(api, method, path, body);
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer
}

fn get(api: &Client, path: &str) -> (u16, Value) {
    let answer = api.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (answer.status, answer.json())
}

/// A product with `amount` units on hand.
fn product(api: &Client, title: &str, price: f64, amount: i64) -> String {
    let created = ok(
        api,
        "POST",
        "/products",
        json!({"title": title, "description": "for the test", "price": price}),
    );
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    ok(
        api,
        "PUT",
        &format!("/products/{uuid}/inventory"),
        json!({"amount": amount}),
    );
    uuid
}

/// The product's stock as the write side holds it (a change by 0 answers the product unchanged).
fn stock(api: &Client, product: &str) -> (i64, i64, i64) {
    let answer = ok(
        api,
        "PATCH",
        &format!("/products/{product}/inventory"),
        json!({"amount_diff": 0}),
    );
    let inventory = &answer["inventory"];
    (
        inventory["amount"].as_i64().unwrap(),
        inventory["reserved"].as_i64().unwrap(),
        inventory["sold"].as_i64().unwrap(),
    )
}

fn order_body(cart: &str, card: &str) -> Value {
    json!({
        "cart": cart,
        "payment_detail": {"card_holder": "Alice Liddell", "card_number": card, "card_expire": "12/99", "card_cvc": "123"},
        "shipment_detail": {"name": "Alice", "last_name": "Liddell", "email": "alice@example.com",
            "address": "Rabbit Hole 1", "country": "UK", "city": "Oxford", "province": "Oxfordshire", "zip": "12345"},
    })
}

const WAIT: Duration = Duration::from_secs(30);

/// One system for both stories: two systems at once would share the broker's topics and consumer
/// groups (the services have the same names) and take each other's messages.
#[test]
fn the_shop_through_the_gateway() {
    let (_system, api, _dir) = support::shop();
    customers_fill_carts_order_pay_and_review(&api);
    an_order_beyond_the_stock_leaves_nothing_reserved_sold_or_paid(&api);
    carts_racing_for_one_product_reserve_exactly_what_they_were_told(&api);
}

fn customers_fill_carts_order_pay_and_review(api: &Client) {
    let api = api.clone();
    let (alice, as_alice) = customer(&api, "Alice");
    let (bob, as_bob) = customer(&api, "Bob");
    let cocoa = product(&api, "Cocoa 1kg", 2.5, 10);
    let tea = product(&api, "Tea 500g", 10.0, 10);

    // A cart of her own: the owner is the token's customer, not a number from the body.
    let cart = ok(&as_alice, "POST", "/carts", json!({"user": 1}));
    assert_eq!(cart["user"], json!(alice), "{cart}");
    assert_eq!(cart["entries"], json!([]), "{cart}");
    assert_eq!(cart["version"], json!(1), "{cart}");
    let cart = cart["uuid"].as_str().unwrap().to_owned();
    let items = format!("/carts/{cart}/items");

    // Items reserve stock; the same product twice adds up; PUT sets the units.
    let execution = ok(
        &as_alice,
        "POST",
        &items,
        json!({"product_uuid": cocoa, "quantity": 3}),
    );
    assert!(execution.as_str().is_some(), "the saga's uuid: {execution}");
    ok(
        &as_alice,
        "POST",
        &items,
        json!({"product_uuid": cocoa, "quantity": 1}),
    );
    assert_eq!(stock(&api, &cocoa), (10, 4, 0));
    ok(
        &as_alice,
        "PUT",
        &items,
        json!({"product_uuid": cocoa, "quantity": 2}),
    );
    ok(
        &as_alice,
        "POST",
        &items,
        json!({"product_uuid": tea, "quantity": 2}),
    );
    assert_eq!(stock(&api, &cocoa), (10, 2, 0));
    assert_eq!(stock(&api, &tea), (10, 2, 0));

    // More than is in stock: refused with the reason, and nothing more is reserved.
    let (status, refused) = call(
        &as_alice,
        "POST",
        &items,
        json!({"product_uuid": tea, "quantity": 9}),
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("not enough"),
        "{refused}"
    );
    assert_eq!(stock(&api, &tea), (10, 2, 0));
    // A product that is not in the cart cannot be changed or removed; an unknown one cannot be added.
    let absent = minos::Uuid::new_v4().to_string();
    assert_eq!(
        call(
            &as_alice,
            "PUT",
            &items,
            json!({"product_uuid": absent, "quantity": 1})
        )
        .0,
        400
    );
    assert_eq!(
        call(&as_alice, "DELETE", &items, json!({"product_uuid": absent})).0,
        400
    );
    assert_eq!(
        call(
            &as_alice,
            "POST",
            &items,
            json!({"product_uuid": absent, "quantity": 1})
        )
        .0,
        400
    );
    assert_eq!(
        call(
            &as_alice,
            "POST",
            &items,
            json!({"product_uuid": tea, "quantity": 0})
        )
        .0,
        400
    );

    // Her cart is hers: no token 401, Bob's 403, on the commands and the query.
    assert_eq!(
        call(
            &api,
            "POST",
            &items,
            json!({"product_uuid": tea, "quantity": 1})
        )
        .0,
        401
    );
    assert_eq!(
        call(
            &as_bob,
            "POST",
            &items,
            json!({"product_uuid": tea, "quantity": 1})
        )
        .0,
        403
    );
    assert_eq!(
        call(&as_bob, "DELETE", &format!("/carts/{cart}"), json!({})).0,
        403
    );
    assert_eq!(get(&as_bob, &format!("/carts/{cart}")).0, 403);
    assert_eq!(get(&api, &format!("/carts/{cart}")).0, 401);
    // The query routes read their own writes: no polling.
    let (status, seen) = get(&as_alice, &format!("/carts/{cart}"));
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["products"].as_array().map(Vec::len), Some(2), "{seen}");
    let line = seen["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["product_id"] == json!(cocoa))
        .unwrap()
        .clone();
    assert_eq!(line["quantity"], json!(2), "{seen}");
    assert_eq!(line["title"], json!("Cocoa 1kg"), "{seen}");
    assert_eq!(line["price"], json!(2.5), "{seen}");
    assert_eq!(line["cart_id"], json!(cart), "{seen}");
    assert_eq!(seen["user"], json!(alice), "{seen}");

    // Orders: her token only; an invalid card fails the saga and leaves nothing behind.
    assert_eq!(
        call(
            &api,
            "POST",
            "/orders",
            order_body(&cart, "4242424242424242")
        )
        .0,
        401
    );
    let (status, answer) = call(
        &as_bob,
        "POST",
        "/orders",
        order_body(&cart, "4242424242424242"),
    );
    // The ticket service refuses inside the saga: the order answers the saga's failure, a 400.
    assert_eq!(status, 400, "another customer's cart: {answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("another customer"),
        "{answer}"
    );
    let (status, answer) = call(
        &as_alice,
        "POST",
        "/orders",
        order_body(&cart, "4242424242424241"),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("payment was refused"),
        "{answer}"
    );
    assert_eq!(
        stock(&api, &cocoa),
        (10, 2, 0),
        "the purchase was rejected with the saga"
    );
    assert_eq!(stock(&api, &tea), (10, 2, 0));
    let mut expired = order_body(&cart, "4242424242424242");
    expired["payment_detail"]["card_expire"] = json!("01/20");
    assert_eq!(call(&as_alice, "POST", "/orders", expired).0, 400);

    let order = ok(
        &as_alice,
        "POST",
        "/orders",
        order_body(&cart, "4242 4242 4242 4242"),
    );
    assert_eq!(order["status"], json!("completed"), "{order}");
    assert_eq!(
        order["total_amount"],
        json!(25.0),
        "2 × 2.5 + 2 × 10: {order}"
    );
    assert_eq!(order["customer"], json!(alice), "{order}");
    assert_eq!(
        order["payment_detail"]["card_number"],
        json!("************4242"),
        "{order}"
    );
    assert!(order["payment_detail"].get("card_cvc").is_none(), "{order}");
    assert_eq!(order["shipment_detail"]["zip"], json!(12345), "{order}");
    assert!(order["created_at"].is_i64(), "{order}");
    let order_uuid = order["uuid"].as_str().unwrap().to_owned();
    let ticket = order["ticket"].as_str().unwrap().to_owned();
    // The reserved units are sold; the cart is closed; it cannot be ordered twice.
    assert_eq!(stock(&api, &cocoa), (8, 0, 2));
    assert_eq!(stock(&api, &tea), (8, 0, 2));
    let (status, again) = call(
        &as_alice,
        "POST",
        "/orders",
        order_body(&cart, "4242424242424242"),
    );
    assert_eq!(status, 400, "{again}");
    assert_eq!(stock(&api, &cocoa), (8, 0, 2));
    assert_eq!(
        get(&as_alice, &format!("/carts/{cart}")).0,
        404,
        "the cart is closed"
    );

    // The order, the customer's orders and the ticket on the query sides, to her only.
    let (status, dto) = get(&as_alice, &format!("/orders/{order_uuid}"));
    assert_eq!(status, 200, "{dto}");
    assert_eq!(dto["customer_uuid"], json!(alice), "{dto}");
    assert_eq!(dto["ticket_uuid"], json!(ticket), "{dto}");
    assert_eq!(dto["total_amount"], json!(25.0), "{dto}");
    assert_eq!(get(&as_bob, &format!("/orders/{order_uuid}")).0, 403);
    let (status, orders) = get(&as_alice, &format!("/orders/user/{alice}"));
    assert_eq!(status, 200, "{orders}");
    assert_eq!(orders.as_array().map(Vec::len), Some(1), "{orders}");
    assert_eq!(get(&as_bob, &format!("/orders/user/{alice}")).0, 403);
    let (status, bobs) = get(&as_bob, &format!("/orders/user/{bob}"));
    assert_eq!((status, bobs), (200, json!([])));
    let (status, ticket_dto) = get(&as_alice, &format!("/tickets/{ticket}"));
    assert_eq!(status, 200, "{ticket_dto}");
    assert_eq!(ticket_dto["total_price"], json!(25.0), "{ticket_dto}");
    assert_eq!(
        ticket_dto["entries"].as_array().map(Vec::len),
        Some(2),
        "{ticket_dto}"
    );
    assert_eq!(get(&as_bob, &format!("/tickets/{ticket}")).0, 403);

    // Reviews: one per customer and product, scores 1 to 5, the author's token.
    let review = |client: &Client, score: i64| {
        call(
            client,
            "POST",
            "/reviews",
            json!({"product": cocoa, "title": "Cocoa", "description": "Tastes of cocoa.", "score": score}),
        )
    };
    assert_eq!(review(&api, 4).0, 401);
    assert_eq!(review(&as_alice, 7).0, 400);
    let (status, alices) = review(&as_alice, 4);
    assert_eq!(status, 200, "{alices}");
    assert_eq!(alices["user"], json!(alice), "{alices}");
    assert_eq!(alices["product"], json!(cocoa), "{alices}");
    let (status, twice) = review(&as_alice, 5);
    assert_eq!(status, 400, "one review per product: {twice}");
    let (status, bobs) = review(&as_bob, 2);
    assert_eq!(status, 200, "{bobs}");
    let (status, unknown) = call(
        &as_bob,
        "POST",
        "/reviews",
        json!({"product": absent, "title": "?", "description": "?", "score": 3}),
    );
    assert_eq!(status, 400, "{unknown}");
    eventually("the product view counts the reviews", WAIT, || {
        let (_, p) = get(&api, &format!("/products/{cocoa}"));
        p["reviews_count"] == json!(2) && p["reviews_score"] == json!(3.0)
    });
    let path = format!("/reviews/{}", alices["uuid"].as_str().unwrap());
    assert_eq!(call(&as_bob, "PUT", &path, json!({"score": 1})).0, 403);
    assert_eq!(call(&as_alice, "PUT", &path, json!({"user": bob})).0, 400);
    let changed = ok(&as_alice, "PUT", &path, json!({"score": 5}));
    assert_eq!(
        (changed["score"].clone(), changed["version"].clone()),
        (json!(5), json!(2))
    );
    eventually("the product view follows a changed score", WAIT, || {
        let (_, p) = get(&api, &format!("/products/{cocoa}"));
        p["reviews_count"] == json!(2) && p["reviews_score"] == json!(3.5)
    });
    let mut reviews = Value::Null;
    eventually("the product's reviews show with names", WAIT, || {
        reviews = get(&api, &format!("/reviews/product/{cocoa}")).1;
        reviews
            .as_array()
            .is_some_and(|r| r.len() == 2 && r[0]["score"] == json!(5))
    });
    assert_eq!(reviews[0]["name"], json!("Alice"), "{reviews}");
    assert_eq!(reviews[0]["product_title"], json!("Cocoa 1kg"), "{reviews}");
    assert_eq!(reviews[1]["user_uuid"], json!(bob), "{reviews}");
    let (_, top) = get(
        &api,
        &format!("/reviews/product/{cocoa}/score?order=desc&limit=1"),
    );
    assert_eq!(top.as_array().map(Vec::len), Some(1), "{top}");
    assert_eq!(top[0]["score"], json!(5), "{top}");
    let (_, rated) = get(&api, "/reviews/score?order=desc&limit=10");
    assert_eq!(
        rated[0],
        json!({"product_uuid": cocoa, "product_title": "Cocoa 1kg", "average": 3.5})
    );
    let (_, last) = get(&api, "/reviews/last?limit=1");
    assert_eq!(last[0]["user_uuid"], json!(bob), "{last}");
    let (_, mine) = get(&api, &format!("/reviews/user/{alice}"));
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    assert_eq!(get(&api, "/reviews/score?order=sideways").0, 400);
}

fn an_order_beyond_the_stock_leaves_nothing_reserved_sold_or_paid(api: &Client) {
    let api = api.clone();
    let (alice, as_alice) = customer(&api, "Alice");
    let cocoa = product(&api, "Cocoa 1kg", 2.5, 5);
    let cart = ok(&as_alice, "POST", "/carts", json!({}))["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &as_alice,
        "POST",
        &format!("/carts/{cart}/items"),
        json!({"product_uuid": cocoa, "quantity": 4}),
    );
    assert_eq!(stock(&api, &cocoa), (5, 4, 0));
    // The stock shrinks under the reservation: the purchase step is refused, and the saga's
    // transaction is rejected everywhere (the ticket, the payment, nothing of it stays).
    ok(
        &api,
        "PUT",
        &format!("/products/{cocoa}/inventory"),
        json!({"amount": 2}),
    );
    let (status, answer) = call(
        &as_alice,
        "POST",
        "/orders",
        order_body(&cart, "4242424242424242"),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("not enough"),
        "{answer}"
    );
    assert_eq!(stock(&api, &cocoa), (2, 4, 0));
    let (status, orders) = get(&as_alice, &format!("/orders/user/{alice}"));
    assert_eq!((status, orders), (200, json!([])));
    // The cart is still hers; deleting it releases every reserved unit.
    assert_eq!(get(&as_alice, &format!("/carts/{cart}")).0, 200);
    let execution = ok(&as_alice, "DELETE", &format!("/carts/{cart}"), json!({}));
    assert!(execution.as_str().is_some(), "{execution}");
    assert_eq!(stock(&api, &cocoa), (2, 0, 0));
    assert_eq!(
        get(&as_alice, &format!("/carts/{cart}")).0,
        404,
        "the cart is deleted"
    );
}

/// Several customers reserve one product at once: each is answered 200 or a 400 to retry (the
/// product's transaction claim went to another saga), never more than that, and the product holds
/// exactly the units of the 200s.
fn carts_racing_for_one_product_reserve_exactly_what_they_were_told(api: &Client) {
    let cocoa = product(api, "Cocoa 1kg", 2.5, 100);
    let racers: Vec<(Client, String)> = (0..4)
        .map(|i| {
            let (_, client) = customer(api, &format!("Racer{i}"));
            let cart = ok(&client, "POST", "/carts", json!({}))["uuid"]
                .as_str()
                .unwrap()
                .to_owned();
            (client, cart)
        })
        .collect();
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let running: Vec<_> = racers
            .iter()
            .map(|(client, cart)| {
                let cocoa = cocoa.clone();
                scope.spawn(move || {
                    call(
                        client,
                        "POST",
                        &format!("/carts/{cart}/items"),
                        json!({"product_uuid": cocoa, "quantity": 3}),
                    )
                })
            })
            .collect();
        running.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let granted = answers.iter().filter(|(status, _)| *status == 200).count() as i64;
    for (status, answer) in &answers {
        assert!(*status == 200 || *status == 400, "{status} {answer}");
    }
    assert!(granted >= 1, "{answers:?}");
    assert_eq!(stock(api, &cocoa), (100, 3 * granted, 0), "{answers:?}");
}
