//! Completed orders per second, end to end through the gateway, at 1, 8 and 32 concurrent customers:
//! the eight services, the registry and the gateway as processes on PostgreSQL (a schema each) and
//! Kafka, as `run.sh` starts them.
//!
//! Each customer (registered and logged in beforehand) repeats a purchase: `POST /carts`, `POST
//! /carts/{uuid}/items` (the cart saga reserves the units), `POST /orders` (the order saga: ticket →
//! purchase → payment → cart closed → order). A purchase counts when the order answers `completed`.
//! Each customer buys its own product, so purchases do not contend for one product's stock (see
//! the README: concurrent sagas changing one product serialise on it, and the losers are refused).
//! Afterwards the benchmark checks that every completed order was stored once and every unit sold once.
//!
//! `MINOS_BENCH_SCALE=0.1` for a quick run. Needs PostgreSQL and Kafka (`MINOS_TEST_KAFKA`, default
//! 127.0.0.1:9092).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minos_support::bench::{percentile, scale};
use minos_support::http::Client;
use serde_json::{json, Value};

fn call(api: &Client, method: &str, path: &str, body: &Value) -> Value {
    let answer = api
        .request(method, path, Some(&body.to_string()))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(answer.status, 200, "{method} {path}: {}", answer.body);
    answer.json()
}

struct Customer {
    uuid: String,
    api: Client,
    product: String,
}

fn customer(api: &Client, index: usize) -> Customer {
    let username = format!(
        "bench-{index}-{}",
        &minos::Uuid::new_v4().simple().to_string()[..8]
    );
    let (status, registered) = support::register(api, &username, "Bench");
    assert_eq!(status, 200, "{registered}");
    let (status, logged_in) = support::login(api, &username, "correct horse");
    assert_eq!(status, 200, "{logged_in}");
    let product = call(
        api,
        "POST",
        "/products",
        &json!({"title": format!("Product {index}"), "description": "bench", "price": 1.5}),
    )["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    call(
        api,
        "PUT",
        &format!("/products/{product}/inventory"),
        &json!({"amount": 1_000_000}),
    );
    Customer {
        uuid: registered["user"].as_str().unwrap().to_owned(),
        api: api.clone().with_token(logged_in["token"].as_str().unwrap()),
        product,
    }
}

/// One purchase of 2 units: the time of the whole purchase and of `POST /orders` alone.
fn purchase(customer: &Customer) -> (Duration, Duration) {
    let started = Instant::now();
    let cart = call(&customer.api, "POST", "/carts", &json!({}))["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    call(
        &customer.api,
        "POST",
        &format!("/carts/{cart}/items"),
        &json!({"product_uuid": customer.product, "quantity": 2}),
    );
    let ordering = Instant::now();
    let order = call(
        &customer.api,
        "POST",
        "/orders",
        &json!({
            "cart": cart,
            "payment_detail": {"card_holder": "Bench", "card_number": "4242424242424242",
                "card_expire": "12/99", "card_cvc": "123"},
            "shipment_detail": {"name": "B", "last_name": "B", "email": "b@example.com", "address": "A 1",
                "country": "X", "city": "Y", "province": "Z", "zip": 1},
        }),
    );
    assert_eq!(order["status"], json!("completed"), "{order}");
    (started.elapsed(), ordering.elapsed())
}

fn main() {
    let (_system, api, _dir) = support::shop();
    let seconds = scale(20, 3) as u64;
    let customers: Vec<Arc<Customer>> = (0..32).map(|i| Arc::new(customer(&api, i))).collect();
    // One warm-up purchase each way (connections, prepared statements, consumer groups).
    purchase(&customers[0]);

    println!(
        "ecommerce purchases through the gateway (cart + item + order; 8 services, PostgreSQL + Kafka), {seconds} s per row"
    );
    println!("customers  orders/s  purchase p50  p99       POST /orders p50  p99");
    let mut bought = vec![0usize; customers.len()];
    bought[0] += 1;
    for concurrency in [1usize, 8, 32] {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let workers: Vec<_> = customers[..concurrency]
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, customer)| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut times = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        times.push(purchase(&customer));
                    }
                    (i, times)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        let mut whole = Vec::new();
        let mut orders = Vec::new();
        for worker in workers {
            let (i, times) = worker.join().expect("a customer failed");
            bought[i] += times.len();
            for (w, o) in times {
                whole.push(w);
                orders.push(o);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        whole.sort();
        orders.sort();
        println!(
            "{concurrency:>9}  {:>8.1}  {:>9.1} ms  {:>6.1} ms  {:>13.1} ms  {:>6.1} ms",
            whole.len() as f64 / elapsed,
            ms(percentile(&whole, 0.5)),
            ms(percentile(&whole, 0.99)),
            ms(percentile(&orders, 0.5)),
            ms(percentile(&orders, 0.99)),
        );
    }

    // Nothing lost, nothing doubled: each customer's orders on the query side and its product's
    // units sold match the purchases answered `completed`.
    for (customer, bought) in customers.iter().zip(&bought) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let orders = customer
                .api
                .get(&format!("/orders/user/{}", customer.uuid))
                .expect("the orders")
                .json();
            let count = orders.as_array().map_or(0, Vec::len);
            if count == *bought {
                break;
            }
            assert!(
                Instant::now() < deadline && count < *bought,
                "customer {}: {count} orders stored for {bought} completed",
                customer.uuid
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let product = call(
            &api,
            "PATCH",
            &format!("/products/{}/inventory", customer.product),
            &json!({"amount_diff": 0}),
        );
        assert_eq!(
            product["inventory"],
            json!({"amount": 1_000_000 - 2 * *bought as i64, "reserved": 0, "sold": 2 * *bought as i64}),
            "customer {}",
            customer.uuid
        );
    }
    println!(
        "checked: {} orders stored once each, every unit reserved, then sold once",
        bought.iter().sum::<usize>()
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
