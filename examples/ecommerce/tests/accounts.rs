//! Registration, log-in and tokens through the gateway, on processes over PostgreSQL and Kafka: the
//! authentication service's saga creates the customer in the customer service and the credentials,
//! all or nothing; a login answers a token the gateway and the services accept; a customer's own data
//! needs that customer's token.

mod support;

use support::{login, register};

use std::time::Duration;

use minos_support::process::eventually;
use serde_json::json;

#[test]
fn customers_register_log_in_and_act_on_their_own_data_only() {
    let (_system, api, _dir) = support::system(
        &[
            env!("CARGO_BIN_EXE_customer"),
            env!("CARGO_BIN_EXE_authentication"),
        ],
        &[("GET", "/login"), ("POST", "/customers")],
    );
    let suffix = &minos::Uuid::new_v4().simple().to_string()[..8];
    let (alice, bob) = (format!("alice-{suffix}"), format!("bob-{suffix}"));

    let (status, registered) = register(&api, &alice, "Alice");
    assert_eq!(status, 200, "{registered}");
    let alice_uuid = registered["user"]
        .as_str()
        .expect("the customer's uuid")
        .to_owned();
    let (status, bob_registered) = register(&api, &bob, "Bob");
    assert_eq!(status, 200, "{bob_registered}");
    let bob_uuid = bob_registered["user"].as_str().unwrap().to_owned();

    // A taken username, a refused customer, a short password: 400, and nothing half-made.
    let (status, taken) = register(&api, &alice, "Alice");
    assert_eq!(status, 400, "{taken}");
    assert!(
        taken["error"].as_str().unwrap().contains("already exists"),
        "{taken}"
    );
    let carol = format!("carol-{suffix}");
    let (status, refused) = register(&api, &carol, " ");
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("customer could not be created"),
        "{refused}"
    );
    assert_eq!(
        login(&api, &carol, "correct horse").0,
        400,
        "no credentials without a customer"
    );
    let short = api
        .post(
            "/login",
            &json!({"username": format!("dan-{suffix}"), "password": "short"}).to_string(),
        )
        .unwrap();
    assert_eq!(short.status, 400, "{}", short.body);

    // Log-in: a token whose subject is the customer.
    let (status, wrong) = login(&api, &alice, "wrong horse");
    assert_eq!(
        (status, wrong["error"].as_str()),
        (400, Some("Invalid username or password"))
    );
    assert_eq!(login(&api, "nobody-at-all", "correct horse").0, 400);
    let no_basic = api.get("/login").unwrap();
    assert_eq!(no_basic.status, 400, "{}", no_basic.body);
    let (status, logged_in) = login(&api, &alice, "correct horse");
    assert_eq!(status, 200, "{logged_in}");
    let alice_token = logged_in["token"].as_str().unwrap().to_owned();
    let bob_token = login(&api, &bob, "correct horse").1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = api
        .clone()
        .with_token(&alice_token)
        .request("POST", "/token", None)
        .unwrap();
    assert_eq!(claims.status, 200, "{}", claims.body);
    assert_eq!(claims.json()["sub"], json!(alice_uuid));
    assert!(
        claims.json()["exp"].is_i64(),
        "tokens expire: {}",
        claims.body
    );
    let forged = api
        .clone()
        .with_token(&format!("{alice_token}x"))
        .request("POST", "/customers", Some("{}"))
        .unwrap();
    assert_eq!(
        forged.status, 401,
        "a bad token is refused at the gateway: {}",
        forged.body
    );

    // A customer's own data: no token 401, another customer's token 403, their own 200.
    let path = format!("/customers/{alice_uuid}");
    assert_eq!(api.request("DELETE", &path, None).unwrap().status, 401);
    let as_bob = api
        .clone()
        .with_token(&bob_token)
        .request("DELETE", &path, None)
        .unwrap();
    assert_eq!(as_bob.status, 403, "{}", as_bob.body);
    let as_alice = api
        .clone()
        .with_token(&alice_token)
        .request("DELETE", &path, None)
        .unwrap();
    assert_eq!(as_alice.status, 200, "{}", as_alice.body);
    // Her credentials go with her (the CustomerDeleted event).
    eventually(
        "alice can no longer log in",
        Duration::from_secs(30),
        || login(&api, &alice, "correct horse").0 == 400,
    );
    assert_eq!(
        login(&api, &bob, "correct horse").0,
        200,
        "bob is untouched ({bob_uuid})"
    );
}
