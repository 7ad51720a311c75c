//! The product service given/when/then, in process: stock reserved and purchased for carts and orders
//! over the broker (all or nothing), and the catalogue's read model.

#[allow(dead_code)]
#[path = "../src/bin/product.rs"]
mod product;

use minos::prelude::*;
use minos::testing::Scenario;
use product::{Inventory, Product};

fn cacao(amount: i64) -> Product {
    Product {
        code: "C4C400".into(),
        title: "Cacao 1kg".into(),
        description: "Desayuno y merienda".into(),
        price: 2.0,
        inventory: Inventory {
            amount,
            reserved: 0,
            sold: 0,
        },
    }
}

async fn inventory(service: &Scenario, uuid: Uuid) -> (i64, i64, i64) {
    let read = service
        .service()
        .context()
        .repository()
        .get::<Product>(uuid)
        .await
        .unwrap();
    (
        read.inventory.amount,
        read.inventory.reserved,
        read.inventory.sold,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_is_reserved_purchased_and_released() -> minos::Result<()> {
    let service = Scenario::named("product").await?;
    let cacao = service.given(cacao(12)).await?;
    let uuid = cacao.uuid();

    let reserved = service
        .when_command(
            "ReserveProducts",
            json!({"quantities": {uuid.to_string(): 3}}),
        )
        .await;
    reserved.then_status(200);
    reserved
        .then_published(&["ProductUpdated", "ProductUpdated.inventory"])
        .await;
    assert_eq!(inventory(&service, uuid).await, (12, 3, 0));

    service
        .when_command(
            "PurchaseProducts",
            json!({"quantities": {uuid.to_string(): 3}}),
        )
        .await
        .then_status(200);
    assert_eq!(inventory(&service, uuid).await, (9, 0, 3));

    // A negative quantity releases what was reserved.
    service
        .when_command(
            "ReserveProducts",
            json!({"quantities": {uuid.to_string(): 4}}),
        )
        .await
        .then_status(200);
    service
        .when_command(
            "ReserveProducts",
            json!({"quantities": {uuid.to_string(): -4}}),
        )
        .await
        .then_status(200);
    assert_eq!(inventory(&service, uuid).await, (9, 0, 3));
    service.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_cannot_be_met_changes_nothing() -> minos::Result<()> {
    let service = Scenario::named("product").await?;
    let plenty = service.given(cacao(10)).await?.uuid();
    let scarce = service.given(cacao(1)).await?.uuid();

    let refused = service
        .when_command(
            "ReserveProducts",
            json!({"quantities": {plenty.to_string(): 2, scarce.to_string(): 2}}),
        )
        .await;
    refused.then_error(400, "There is not enough product amount");
    refused.then_no_events().await;
    assert_eq!(inventory(&service, plenty).await, (10, 0, 0));

    let missing = Uuid::new_v4();
    let unknown = service
        .when_command(
            "ReserveProducts",
            json!({"quantities": {plenty.to_string(): 1, missing.to_string(): 1}}),
        )
        .await;
    unknown.then_error(400, &format!("Some products do not exist: {missing}"));
    unknown.then_no_events().await;
    service.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_follows_the_products() -> minos::Result<()> {
    let service = Scenario::named("product").await?;
    let empty = service.given(cacao(0)).await?.uuid();
    let stocked = service.given(cacao(5)).await?.uuid();

    let without = service.when_get("/products/without-stock").await;
    let listed: Vec<&Value> = without
        .body()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["uuid"])
        .collect();
    assert_eq!(listed, [&json!(empty)]);

    let renamed = service
        .when_patch(
            &format!("/products/{stocked}"),
            json!({"title": "Cacao 2kg"}),
        )
        .await;
    renamed.then_status(200);
    assert_eq!(renamed.body()["version"], 2);
    renamed.then_events(&["ProductUpdated"]).await;
    let read = service.when_get(&format!("/products/{stocked}")).await;
    assert_eq!(read.body()["title"], "Cacao 2kg", "{}", read.body());

    let unchanged = service
        .when_patch(
            &format!("/products/{stocked}"),
            json!({"title": "Cacao 2kg"}),
        )
        .await;
    assert_eq!(unchanged.body()["version"], 2, "no change, no new version");
    unchanged.then_no_events().await;

    service
        .when_patch(&format!("/products/{stocked}"), json!({"price": -1}))
        .await
        .then_error(400, "price");
    service
        .when_delete(&format!("/products/{stocked}"))
        .await
        .then_status(200);
    let gone = service.when_get(&format!("/products/{stocked}")).await;
    assert_eq!(gone.body(), &Value::Null);
    service.stop().await;
    Ok(())
}
