//! The original application's own contract tests (its tavern files, `test_product_crud` and
//! `test_payment_create`), replayed unchanged through the gateway on processes: `minos
//! discovery`, `minos gateway`, the product and payment services on PostgreSQL (a schema each) and
//! Kafka. As tavern's strict JSON mode does, every answer must have exactly the keys listed.

mod support;

use std::time::Duration;

use minos_support::process::eventually;
use serde_json::{json, Value};

/// Checks `answer` has exactly the keys of `expected`; `"<int>"` and `"<str>"` stand for any integer
/// and any string (tavern's `!anyint`, `!anystr`).
fn matches(answer: &Value, expected: &Value) {
    let (Value::Object(got), Value::Object(want)) = (answer, expected) else {
        panic!("expected an object like {expected}, got {answer}");
    };
    let mut got_keys: Vec<&String> = got.keys().collect();
    let mut want_keys: Vec<&String> = want.keys().collect();
    got_keys.sort();
    want_keys.sort();
    assert_eq!(got_keys, want_keys, "the keys of {answer}");
    for (key, want) in want {
        let got = &got[key];
        match want.as_str() {
            Some("<int>") => assert!(
                got.is_i64() || got.is_u64(),
                "{key}: {got} is not an integer"
            ),
            Some("<str>") => assert!(got.is_string(), "{key}: {got} is not a string"),
            _ if want.is_object() => matches(got, want),
            _ => assert_eq!(got, want, "{key} in {answer}"),
        }
    }
}

#[test]
fn the_original_tavern_tests_pass_through_the_gateway() {
    let (_system, api, _dir) = support::system(
        &[env!("CARGO_BIN_EXE_product"), env!("CARGO_BIN_EXE_payment")],
        &[("GET", "/products"), ("POST", "/payments")],
    );

    // test_payment_create.tavern.yaml
    let created = api
        .post(
            "/payments",
            &json!({"credit_number": 12345678123456768u64, "amount": 30.0}).to_string(),
        )
        .unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    matches(
        &created.json(),
        &json!({"uuid": "<str>", "version": 1, "status": "created",
                "credit_number": 12345678123456768u64, "amount": 30.0,
                "created_at": "<int>", "updated_at": "<int>"}),
    );

    // test_product_crud.tavern.yaml
    let created = api
        .post(
            "/products",
            &json!({"title": "Cacao 1kg", "description": "Desayuno y merienda", "price": 2.0})
                .to_string(),
        )
        .unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    let product = created.json();
    matches(
        &product,
        &json!({"uuid": "<str>", "version": 1, "created_at": "<int>", "updated_at": "<int>",
                "code": "<str>", "title": "Cacao 1kg", "description": "Desayuno y merienda",
                "price": 2.0, "inventory": {"amount": 0, "reserved": 0, "sold": 0}}),
    );
    let (uuid, code) = (product["uuid"].clone(), product["code"].clone());
    let uuid_text = uuid.as_str().unwrap();
    assert_eq!(code.as_str().unwrap().len(), 6);

    std::thread::sleep(Duration::from_millis(500)); // the test's `delay_before: 0.5`
    let read = api.get(&format!("/products/{uuid_text}")).unwrap();
    assert_eq!(read.status, 200, "{}", read.body);
    matches(
        &read.json(),
        &json!({"uuid": uuid, "code": code, "title": "Cacao 1kg",
                "description": "Desayuno y merienda", "price": 2.0,
                "reviews_count": 0, "reviews_score": 0.0}),
    );

    let path = format!("/products/{uuid_text}/inventory");
    for (method, body, version, amount) in [
        ("PUT", json!({"amount": 56}), 2, 56),
        ("PATCH", json!({"amount_diff": -12}), 3, 44),
    ] {
        let answer = api.request(method, &path, Some(&body.to_string())).unwrap();
        assert_eq!(answer.status, 200, "{method}: {}", answer.body);
        matches(
            &answer.json(),
            &json!({"uuid": uuid, "version": version, "created_at": "<int>",
                    "updated_at": "<int>", "code": code, "title": "Cacao 1kg",
                    "description": "Desayuno y merienda", "price": 2.0,
                    "inventory": {"amount": amount, "reserved": 0, "sold": 0}}),
        );
    }

    // Beyond the tavern files: refusals, the catalogue, deletion.
    let too_many = api
        .request(
            "PATCH",
            &path,
            Some(&json!({"amount_diff": -45}).to_string()),
        )
        .unwrap();
    assert_eq!(too_many.status, 400, "{}", too_many.body);
    let negative = api
        .request("PUT", &path, Some(&json!({"amount": -1}).to_string()))
        .unwrap();
    assert_eq!(negative.status, 400, "{}", negative.body);
    let bad_card = api
        .post(
            "/payments",
            &json!({"credit_number": "12ab", "amount": 3}).to_string(),
        )
        .unwrap();
    assert_eq!(bad_card.status, 400, "{}", bad_card.body);
    let unknown = api
        .get(&format!("/products/{}", minos::Uuid::new_v4()))
        .unwrap();
    assert_eq!((unknown.status, unknown.json()), (200, Value::Null));
    eventually(
        "the listing has the product",
        Duration::from_secs(10),
        || {
            api.get("/products").is_ok_and(|a| {
                a.json()
                    .as_array()
                    .is_some_and(|all| all.iter().any(|p| p["uuid"] == uuid))
            })
        },
    );
    let deleted = api
        .request("DELETE", &format!("/products/{uuid_text}"), None)
        .unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let again = api
        .request("DELETE", &format!("/products/{uuid_text}"), None)
        .unwrap();
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(
        again.body.contains("The product does not exist."),
        "{}",
        again.body
    );
}
