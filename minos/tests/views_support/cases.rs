// CQRS views, the same cases on every backend (`BACKEND` is set by the file that includes this one):
// declared with `#[view]`, written by the query service's view handlers in commit order, read with
// typed queries, built from history, rebuilt on demand, read your writes with the `minos-position`
// header, and fed by another service's events.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use minos::prelude::*;
use minos::testing::{eventually, test_config, TestService};
use minos::views::POSITION_HEADER;
use minos::{Config, Launcher};

#[root_entity]
pub struct Item {
    pub name: String,
    pub price: i64,
    pub tags: Vec<String>,
}

/// One row per live item.
#[view]
pub struct ItemSummary {
    #[key]
    pub uuid: Uuid,
    #[index]
    pub name: String,
    pub price: i64,
    pub tags: Vec<String>,
    pub updates: u64,
    pub note: Option<String>,
}

/// One row counting items created and deleted.
#[view]
pub struct ItemTotals {
    #[key]
    pub id: String,
    pub created: u64,
    pub deleted: u64,
}

/// Whether `ItemSummary` already had each created item when the `ItemCreated` handler without a view
/// ran.
static SEEN_IN_VIEW: std::sync::Mutex<Vec<(Uuid, bool)>> = std::sync::Mutex::new(Vec::new());

/// Makes the `ItemSummary` handler fail on items named `boom` while set.
static FAIL_ON_BOOM: AtomicBool = AtomicBool::new(false);

/// Makes the `ItemTotals` handler fail on items named `bust` while set.
static FAIL_ON_BUST: AtomicBool = AtomicBool::new(false);

/// Makes the `ItemTotals` handler also write a row whose key has a NUL character, on items named
/// `nul`, while set: PostgreSQL refuses it when the page's rows go out (SQLite stores it).
static NUL_IN_TOTALS: AtomicBool = AtomicBool::new(false);

pub struct ItemCommands;

#[command_service]
impl ItemCommands {
    #[enroute(rest = "POST /items")]
    async fn create(&self, request: Request) -> Result<Response> {
        let body: Value = request.content()?;
        let item = Item::create(Item {
            name: body["name"].as_str().unwrap_or_default().to_owned(),
            price: body["price"].as_i64().unwrap_or(0),
            tags: serde_json::from_value(body["tags"].clone()).unwrap_or_default(),
        })
        .await?;
        Ok(Response::json(json!({"uuid": item.uuid()})).with_status(201))
    }

    #[enroute(rest = "PATCH /items/{uuid}")]
    async fn rename(&self, request: Request) -> Result<Response> {
        let mut item = Item::get(request.param("uuid")?).await?;
        let body: Value = request.content()?;
        item.name = body["name"].as_str().unwrap_or_default().to_owned();
        item.save().await?;
        Ok(Response::json(json!({"version": item.version()})))
    }

    #[enroute(rest = "DELETE /items/{uuid}")]
    async fn delete(&self, request: Request) -> Result<Response> {
        Item::get(request.param("uuid")?).await?.delete().await?;
        Ok(Response::empty())
    }

    /// A view written outside its handlers: refused.
    #[enroute(rest = "POST /items/forged")]
    async fn forge(&self, _request: Request) -> Result<Response> {
        ItemTotals::upsert(&ItemTotals {
            id: "all".into(),
            created: 1_000,
            deleted: 0,
        })
        .await?;
        Ok(Response::empty())
    }
}

pub struct ItemQueries;

#[query_service]
impl ItemQueries {
    #[enroute(event = "ItemCreated", view = ItemSummary)]
    async fn summary_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let item: Item = event.decode_fields()?;
        if item.name == "boom" && FAIL_ON_BOOM.load(AtomicOrdering::SeqCst) {
            return Err(Error::bad_request("boom is not allowed right now"));
        }
        ItemSummary::upsert(&ItemSummary {
            uuid: event.uuid,
            name: item.name,
            price: item.price,
            tags: item.tags,
            updates: 0,
            note: None,
        })
        .await
    }

    /// A handler without a view: it runs once the views fed by the event have it.
    #[enroute(event = "ItemCreated")]
    async fn created_elsewhere(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let seen = ItemSummary::get(&event.uuid).await?.is_some();
        SEEN_IN_VIEW.lock().unwrap().push((event.uuid, seen));
        Ok(())
    }

    #[enroute(event = "ItemUpdated.name", view = ItemSummary)]
    async fn summary_renamed(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let Some(mut summary) = ItemSummary::get(&event.uuid).await? else {
            return Err(Error::not_found("renamed before created"));
        };
        summary.name = event.fields_diff[0]
            .value
            .as_str()
            .unwrap_or_default()
            .to_owned();
        summary.updates += 1;
        summary.note = Some(format!("renamed at version {}", event.version));
        ItemSummary::upsert(&summary).await
    }

    #[enroute(event = "ItemDeleted", view = ItemSummary)]
    async fn summary_deleted(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        ItemSummary::delete(&event.uuid).await?;
        Ok(())
    }

    #[enroute(event = "ItemCreated", view = ItemTotals)]
    async fn totals_created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let item: Item = event.decode_fields()?;
        if item.name == "bust" && FAIL_ON_BUST.load(AtomicOrdering::SeqCst) {
            return Err(Error::bad_request("bust is not counted right now"));
        }
        if item.name == "nul" && NUL_IN_TOTALS.load(AtomicOrdering::SeqCst) {
            ItemTotals::upsert(&ItemTotals {
                id: "nul\0".into(),
                created: 0,
                deleted: 0,
            })
            .await?;
        }
        let mut totals = ItemTotals::get(&"all".to_owned())
            .await?
            .unwrap_or(ItemTotals {
                id: "all".into(),
                created: 0,
                deleted: 0,
            });
        totals.created += 1;
        ItemTotals::upsert(&totals).await
    }

    #[enroute(event = "ItemDeleted", view = ItemTotals)]
    async fn totals_deleted(&self, _request: Request) -> Result<()> {
        let mut totals = ItemTotals::get(&"all".to_owned())
            .await?
            .ok_or_else(|| Error::not_found("deleted before created"))?;
        totals.deleted += 1;
        ItemTotals::upsert(&totals).await
    }

    /// A view handler writing another view: refused, and the projection does not move on.
    #[enroute(rest = "GET /items")]
    async fn list(&self, request: Request) -> Result<Response> {
        let mut condition = Vec::new();
        if let Some(name) = request.params().get("name") {
            condition.push(Condition::eq("name", name.as_str()));
        }
        if let Some(min) = request.params().get("min_price") {
            let min: i64 = min.parse().map_err(|_| Error::bad_request("min_price"))?;
            condition.push(Condition::ge("price", min));
        }
        let found = ItemSummary::find(Condition::and(condition))
            .order_by(Ordering::desc("price"))
            .limit(
                request
                    .params()
                    .get("limit")
                    .map_or(Ok(100), |l| l.parse())
                    .map_err(|_| Error::bad_request("limit"))?,
            )
            .offset(
                request
                    .params()
                    .get("offset")
                    .map_or(Ok(0), |l| l.parse())
                    .map_err(|_| Error::bad_request("offset"))?,
            )
            .await?;
        Ok(Response::json(found))
    }

    #[enroute(rest = "GET /items/totals")]
    async fn totals(&self, _request: Request) -> Result<Response> {
        Ok(Response::json(ItemTotals::get(&"all".to_owned()).await?))
    }

    #[enroute(rest = "GET /items/tagged/{tag}")]
    async fn tagged(&self, request: Request) -> Result<Response> {
        let tag: String = request.param("tag")?;
        Ok(Response::json(
            ItemSummary::find(Condition::contains("tags", tag.as_str())).await?,
        ))
    }

    /// The names of the items matching one of the conditions below, by name.
    #[enroute(rest = "GET /items/where/{case}")]
    async fn matching(&self, request: Request) -> Result<Response> {
        let case: String = request.param("case")?;
        let condition = match case.as_str() {
            "eq" => Condition::eq("name", "pen"),
            "note_null" => Condition::eq("note", Value::Null),
            "note_set" => Condition::ne("note", Value::Null),
            "note_ne" => Condition::ne("note", "renamed at version 2"),
            "not_note_eq" => !Condition::eq("note", "renamed at version 2"),
            "range" => Condition::gt("price", 3) & Condition::le("price", 7),
            "float" => Condition::lt("price", 3.5),
            "in" => Condition::is_in("name", ["pen", "ink"]),
            "in_null" => Condition::is_in("note", [Value::Null]),
            "like" => Condition::like("name", "p%"),
            "like_exact" => Condition::like("name", "p_d"),
            "like_case" => Condition::like("name", "P%"),
            "contains" => Condition::contains("tags", "ink"),
            "or" => Condition::eq("name", "pen") | Condition::eq("price", 7),
            "false" => Condition::False,
            "wrong_kind" => Condition::eq("price", "3"),
            "unknown_field" => Condition::eq("colour", "red"),
            "list_field" => Condition::eq("tags", json!(["a"])),
            _ => return Err(Error::bad_request("unknown case")),
        };
        let mut names: Vec<String> = ItemSummary::find(condition)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        names.sort();
        Ok(Response::json(names))
    }

    /// The same number two ways: a typed count, and SQL of one's own on the view's table.
    #[enroute(rest = "GET /items/count")]
    async fn count(&self, request: Request) -> Result<Response> {
        let min: i64 = request.param("min_price")?;
        let typed = ItemSummary::count(Condition::ge("price", min)).await?;
        let rows = minos::views::sql(
            "SELECT COUNT(*) AS n FROM view_item_summary WHERE price >= $1",
            &[min.into()],
        )
        .await?;
        Ok(Response::json(json!({"typed": typed, "sql": rows[0]["n"]})))
    }

    #[enroute(rest = "GET /items/plan")]
    async fn plan(&self, request: Request) -> Result<Response> {
        let field = request.params().get("field").cloned().unwrap_or_default();
        let plan = match field.as_str() {
            "price" => {
                ItemSummary::find(Condition::eq("price", 3))
                    .explain()
                    .await?
            }
            _ => {
                ItemSummary::find(Condition::eq("name", "x"))
                    .explain()
                    .await?
            }
        };
        Ok(Response::json(plan))
    }
}

fn config(name: &str) -> Config {
    let mut config = test_config(name);
    if BACKEND == "postgres" {
        // Store and views in a schema of their own; the views in the store's database by default.
        config.storage = minos_support::postgres::fresh_schema_url();
    }
    config.services = vec!["ItemCommands".into(), "ItemQueries".into()];
    config.root_entities = vec!["Item".into()];
    config.views.poll_interval_ms = 50;
    config
}

async fn create(service: &TestService, name: &str, price: i64) -> (Uuid, String) {
    let answer = service
        .http()
        .post(
            "/items",
            json!({"name": name, "price": price, "tags": ["a", name]}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.body);
    let position = answer
        .header(POSITION_HEADER)
        .expect("a command's response carries the positions of its events")
        .to_owned();
    (
        answer.json()["uuid"].as_str().unwrap().parse().unwrap(),
        position,
    )
}

/// `GET path` presenting `position` (`minos-position`): answered once the views have it.
async fn get_after(
    service: &TestService,
    path: &str,
    position: impl Into<String>,
) -> minos::testing::TestResponse {
    service
        .http()
        .clone()
        .with_header(POSITION_HEADER, position)
        .get(path)
        .await
        .unwrap()
}

async fn views_state(service: &TestService) -> Value {
    service.http().get("/views").await.unwrap().json()
}

#[tokio::test]
async fn handlers_keep_views_and_queries_read_them() {
    let service = TestService::start(config("views-basic")).await.unwrap();
    let (first, _) = create(&service, "pen", 3).await;
    let (second, _) = create(&service, "ink", 7).await;
    let (_, position) = create(&service, "pad", 5).await;
    assert!(position.starts_with("Item@"), "{position}");

    // Read your writes: the list waits for the view to reach the position the command answered.
    let listed = get_after(&service, "/items", position.clone()).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let names: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["ink", "pad", "pen"], "ordered by price, descending");

    let filtered = service
        .http()
        .get("/items?min_price=5&limit=1&offset=1")
        .await
        .unwrap();
    assert_eq!(filtered.json()[0]["name"], "pad");

    let renamed = service
        .http()
        .patch(&format!("/items/{first}"), json!({"name": "quill"}))
        .await
        .unwrap();
    let position = renamed.header(POSITION_HEADER).unwrap().to_owned();
    let by_name = get_after(&service, "/items?name=quill", position).await;
    assert_eq!(by_name.json()[0]["updates"], 1);
    assert_eq!(by_name.json()[0]["note"], "renamed at version 2");

    let deleted = service
        .http()
        .delete(&format!("/items/{second}"))
        .await
        .unwrap();
    let position = deleted.header(POSITION_HEADER).unwrap().to_owned();
    let totals = get_after(&service, "/items/totals", position).await;
    assert_eq!(
        totals.json(),
        json!({"id": "all", "created": 3, "deleted": 1})
    );
    let tagged = service.http().get("/items/tagged/quill").await.unwrap();
    assert_eq!(
        tagged.json().as_array().unwrap().len(),
        0,
        "tags are not renamed"
    );
    let tagged = service.http().get("/items/tagged/a").await.unwrap();
    assert_eq!(tagged.json().as_array().unwrap().len(), 2);

    eventually("the views to be live", Duration::from_secs(10), || async {
        views_state(&service).await[0]["state"] == "live"
    })
    .await;
    let state = views_state(&service).await;
    let names: Vec<&str> = state
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ItemSummary", "ItemTotals"]);
    assert_eq!(state[0]["state"], "live");
    assert_eq!(state[0]["sources"][0]["source"], "Item");
    assert_eq!(state[0]["sources"][0]["behind"], 0);
    service.stop().await;
}

#[tokio::test]
async fn an_indexed_field_is_an_index_lookup() {
    if BACKEND != "sqlite" {
        return; // PostgreSQL plans by statistics: its own test fills a table first.
    }
    let service = TestService::start(config("views-plan")).await.unwrap();
    let indexed = service
        .http()
        .get("/items/plan?field=name")
        .await
        .unwrap()
        .json();
    let indexed = indexed.as_str().unwrap();
    assert!(
        indexed.contains("USING INDEX view_item_summary__name"),
        "{indexed}"
    );
    let scanned = service
        .http()
        .get("/items/plan?field=price")
        .await
        .unwrap()
        .json();
    assert!(scanned.as_str().unwrap().contains("SCAN"), "{scanned}");
    service.stop().await;
}

#[tokio::test]
async fn views_are_written_only_by_their_handlers() {
    let service = TestService::start(config("views-forged")).await.unwrap();
    let answer = service
        .http()
        .post("/items/forged", json!({}))
        .await
        .unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer
            .body
            .contains("written only by the event handlers that declare it"),
        "{}",
        answer.body
    );
    service.stop().await;
}

#[tokio::test]
async fn malformed_positions_are_refused_and_unknown_types_do_not_wait() {
    let service = TestService::start(config("views-header")).await.unwrap();
    let client = service
        .http()
        .clone()
        .with_header(POSITION_HEADER, "Item@12");
    let answer = client.get("/items").await.unwrap();
    assert_eq!(answer.status, 400, "{}", answer.body);
    let client = service
        .http()
        .clone()
        .with_header(POSITION_HEADER, "Other@0.99");
    assert_eq!(client.get("/items").await.unwrap().status, 200);
    // A position no event has reached yet: 503 after `views.wait_timeout_ms`.
    let mut config = config("views-header-timeout");
    config.views.wait_timeout_ms = 200;
    let waiting = TestService::start(config).await.unwrap();
    let client = waiting
        .http()
        .clone()
        .with_header(POSITION_HEADER, "Item@0.1000000");
    let answer = client.get("/items").await.unwrap();
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.contains("not yet up to 0.1000000"),
        "{}",
        answer.body
    );
    assert_eq!(answer.header("retry-after"), Some("1"));
    waiting.stop().await;
    service.stop().await;
}

#[tokio::test]
async fn a_new_view_is_built_from_history_and_rebuilt_on_demand() {
    // History written before the service (and its views) existed.
    let config = config("views-history");
    let repository = Repository::open(&config.storage).await.unwrap();
    repository
        .clone()
        .scope(async {
            for i in 0..600 {
                let item = Item::create(Item {
                    name: format!("item-{i}"),
                    price: i,
                    tags: vec![],
                })
                .await?;
                if i % 3 == 0 {
                    item.delete().await?;
                }
            }
            Ok::<(), Error>(())
        })
        .await
        .unwrap();
    let running = Launcher::with_config(config)
        .repository(repository)
        .start()
        .await
        .unwrap();
    let client = minos::testing::TestClient::new(running.addr());
    eventually("the views to be built", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            // Each view has its own projection: wait for both.
            let totals = client.get("/items/totals").await.unwrap().json();
            let listed = client.get("/items?limit=1000").await.unwrap().json();
            totals == json!({"id": "all", "created": 600, "deleted": 200})
                && listed.as_array().map(Vec::len) == Some(400)
        }
    })
    .await;

    let rebuilt = client
        .post("/views/ItemTotals/rebuild", json!({}))
        .await
        .unwrap();
    assert_eq!(rebuilt.status, 202, "{}", rebuilt.body);
    eventually("the view to be rebuilt", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            let state = client.get("/views").await.unwrap().json();
            state[1]["state"] == "live" && state[1]["sources"][0]["applied"] == 800
        }
    })
    .await;
    // Built again from the whole history: nothing counted twice.
    let totals = client.get("/items/totals").await.unwrap().json();
    assert_eq!(totals, json!({"id": "all", "created": 600, "deleted": 200}));
    let unknown = client.post("/views/Nope/rebuild", json!({})).await.unwrap();
    assert_eq!(unknown.status, 404);
    running.stop().await;
}

#[tokio::test]
async fn a_failing_handler_blocks_its_view_without_skipping_or_half_applying() {
    let service = TestService::start(config("views-failing")).await.unwrap();
    let (_, before) = create(&service, "before", 1).await;
    let listed = get_after(&service, "/items", before).await;
    assert_eq!(listed.json().as_array().unwrap().len(), 1);
    FAIL_ON_BOOM.store(true, AtomicOrdering::SeqCst);
    create(&service, "boom", 2).await;
    let (_, position) = create(&service, "after", 3).await;
    eventually(
        "the view to report its failure",
        Duration::from_secs(10),
        || {
            let service = &service;
            async move {
                let state = views_state(service).await;
                state[0]["state"] == "failed"
                    && state[0]["sources"][0]["error"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("boom is not allowed")
            }
        },
    )
    .await;
    // The other view moves on; this one holds at the event before the failure.
    let names: Vec<Value> = service
        .http()
        .get("/items")
        .await
        .unwrap()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].clone())
        .collect();
    assert_eq!(names, [json!("before")]);
    FAIL_ON_BOOM.store(false, AtomicOrdering::SeqCst);
    let listed = get_after(&service, "/items", position).await;
    let names: Vec<Value> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].clone())
        .collect();
    assert_eq!(names, [json!("after"), json!("boom"), json!("before")]);
    let totals = service.http().get("/items/totals").await.unwrap().json();
    assert_eq!(totals["created"], 3);
    service.stop().await;
}

/// The views of one type apply its pages together; when one of them fails, the other goes on at once,
/// whichever of the two failed. On SQLite nothing but the failure wakes it (no poll, no later commit).
/// On PostgreSQL a read of the log waits for older transactions still running anywhere on the server
/// (other tests' included) and the poll picks up what it left: the default poll there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_of_one_type_go_on_without_the_one_that_fails() {
    let mut config = config("views-together");
    config.views.poll_interval_ms = match BACKEND {
        "sqlite" => 600_000,
        _ => 1_000,
    };
    let service = TestService::start(config).await.unwrap();
    let mut last = String::new();
    for i in 0..20 {
        last = create(&service, &format!("n{i}"), i).await.1;
    }
    get_after(&service, "/items", last).await;
    let state = views_state(&service).await;
    for view in state.as_array().unwrap() {
        assert_eq!(view["state"], "live", "{state}");
        assert_eq!(view["sources"][0]["applied"], 20, "{state}");
    }
    assert_eq!(
        state[0]["sources"][0]["position"], state[1]["sources"][0]["position"],
        "{state}"
    );
    // The first view fails: the totals still count the item.
    FAIL_ON_BOOM.store(true, AtomicOrdering::SeqCst);
    create(&service, "boom", 1).await;
    eventually("the totals to count boom", Duration::from_secs(5), || {
        let client = service.http().clone();
        async move { client.get("/items/totals").await.unwrap().json()["created"] == 21 }
    })
    .await;
    FAIL_ON_BOOM.store(false, AtomicOrdering::SeqCst);
    // The second view fails: the listing still shows the item.
    FAIL_ON_BUST.store(true, AtomicOrdering::SeqCst);
    create(&service, "bust", 2).await;
    eventually("the listing to show bust", Duration::from_secs(5), || {
        let client = service.http().clone();
        async move {
            client.get("/items?name=bust").await.unwrap().json().as_array().map(Vec::len) == Some(1)
        }
    })
    .await;
    eventually("the totals to report the failure", Duration::from_secs(5), || {
        let service = &service;
        async move {
            let state = views_state(service).await;
            state[1]["state"] == "failed"
                && state[1]["sources"][0]["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("bust is not counted")
        }
    })
    .await;
    let totals = service.http().get("/items/totals").await.unwrap().json();
    assert_eq!(totals["created"], 21, "bust is not counted yet: {totals}");
    // Both go on, each event applied once: nothing skipped, nothing counted twice.
    FAIL_ON_BUST.store(false, AtomicOrdering::SeqCst);
    let (_, position) = create(&service, "after", 3).await;
    let listed = get_after(&service, "/items?limit=100", position.clone()).await;
    assert_eq!(listed.json().as_array().unwrap().len(), 23, "{}", listed.body);
    let totals = get_after(&service, "/items/totals", position).await.json();
    assert_eq!(totals["created"], 23, "{totals}");
    eventually("both views to be live again", Duration::from_secs(5), || {
        let service = &service;
        async move {
            let state = views_state(service).await;
            state.as_array().unwrap().iter().all(|v| v["state"] == "live")
        }
    })
    .await;
    service.stop().await;
}

/// Another service's view of `Item`: built from the owner's log (`_GetItemEvents`).
#[view]
pub struct RemoteItem {
    #[key]
    pub uuid: Uuid,
    pub name: String,
}

pub struct RemoteQueries;

#[query_service]
impl RemoteQueries {
    #[enroute(event = "ItemCreated", view = RemoteItem)]
    async fn created(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        let item: Item = event.decode_fields()?;
        RemoteItem::upsert(&RemoteItem {
            uuid: event.uuid,
            name: item.name,
        })
        .await
    }

    #[enroute(rest = "GET /remote-items")]
    async fn list(&self, _request: Request) -> Result<Response> {
        Ok(Response::json(RemoteItem::all().await?))
    }
}

#[tokio::test]
async fn a_view_of_another_services_events() {
    let owner = config("views-owner");
    let mut reader = config("views-reader");
    reader.services = vec!["RemoteQueries".into()];
    reader.root_entities = vec![];
    reader.views.poll_interval_ms = 50;
    let services = TestService::start_together([owner, reader]).await.unwrap();
    let (owner, reader) = (&services[0], &services[1]);
    let mut last = String::new();
    for i in 0..5 {
        last = create(owner, &format!("r{i}"), i).await.1;
    }
    // The position the owner answered, presented to the reader: it waits until its view has it.
    let listed = reader
        .http()
        .clone()
        .with_header(POSITION_HEADER, last)
        .get("/remote-items")
        .await
        .unwrap();
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.json().as_array().unwrap().len(), 5);
    for service in services {
        service.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_are_all_projected_once() {
    let service = TestService::start(config("views-concurrent")).await.unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let client = service.http().clone();
            tokio::spawn(async move {
                let answer = client
                    .post("/items", json!({"name": format!("c{i}"), "price": i}))
                    .await
                    .unwrap();
                assert_eq!(answer.status, 201, "{}", answer.body);
                answer.header(POSITION_HEADER).unwrap().to_owned()
            })
        })
        .collect();
    let mut positions = Vec::new();
    for task in tasks {
        positions.push(task.await.unwrap());
    }
    // Each command's own position, presented to the query: its item is there.
    for (i, position) in positions.iter().enumerate().step_by(9) {
        let listed = get_after(&service, &format!("/items?name=c{i}"), position.clone()).await;
        assert_eq!(listed.json().as_array().unwrap().len(), 1, "c{i}: {}", listed.body);
    }
    eventually("every item to be projected", Duration::from_secs(10), || {
        let client = service.http().clone();
        async move {
            let listed = client.get("/items?limit=1000").await.unwrap().json();
            client.get("/items/totals").await.unwrap().json()["created"] == 100
                && listed.as_array().map(Vec::len) == Some(100)
        }
    })
    .await;
    let listed = service.http().get("/items?limit=1000").await.unwrap().json();
    assert_eq!(listed.as_array().unwrap().len(), 100);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minos_command_shows_and_rebuilds_views() {
    if BACKEND != "sqlite" {
        return;
    }
    let service = TestService::start(config("views-cli")).await.unwrap();
    create(&service, "cli", 1).await;
    let url = format!("http://{}", service.addr());
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_minos"))
                .args(&args)
                .output()
                .unwrap()
        })
    };
    eventually("the views to be live", Duration::from_secs(10), || async {
        views_state(&service).await[1]["state"] == "live"
    })
    .await;
    let listed = run(vec!["views".into(), "--url".into(), url.clone()]).await.unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{stdout}");
    assert!(stdout.contains("ItemTotals") && stdout.contains("live"), "{stdout}");
    assert!(stdout.contains("Item") && stdout.contains("applied 1"), "{stdout}");
    let rebuilt = run(vec!["views".into(), "rebuild".into(), "ItemTotals".into(), "--url".into(), url.clone()])
        .await
        .unwrap();
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    let unknown = run(vec!["views".into(), "rebuild".into(), "Nope".into(), "--url".into(), url])
        .await
        .unwrap();
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("no view `Nope`"), "{stderr}");
    service.stop().await;
}

#[tokio::test]
async fn conditions_on_views_follow_the_store_rule() {
    let service = TestService::start(config("views-conditions")).await.unwrap();
    let (pen, _) = create(&service, "pem", 3).await;
    create(&service, "ink", 7).await;
    let (_, position) = create(&service, "pad", 5).await;
    let renamed = service
        .http()
        .patch(&format!("/items/{pen}"), json!({"name": "pen"}))
        .await
        .unwrap();
    let position = renamed.header(POSITION_HEADER).unwrap_or(&position).to_owned();
    let client = service.http().clone().with_header(POSITION_HEADER, position);
    let cases = [
        ("eq", json!(["pen"])),
        ("note_null", json!(["ink", "pad"])),
        ("note_set", json!(["pen"])),
        ("note_ne", json!(["ink", "pad"])),
        ("not_note_eq", json!(["ink", "pad"])),
        ("range", json!(["ink", "pad"])),
        ("float", json!(["pen"])),
        ("in", json!(["ink", "pen"])),
        ("in_null", json!(["ink", "pad"])),
        ("like", json!(["pad", "pen"])),
        ("like_exact", json!(["pad"])),
        ("like_case", json!([])),
        ("contains", json!(["ink"])),
        ("or", json!(["ink", "pen"])),
        ("false", json!([])),
    ];
    for (case, expected) in cases {
        let answer = client.get(&format!("/items/where/{case}")).await.unwrap();
        assert_eq!(answer.status, 200, "{case}: {}", answer.body);
        assert_eq!(answer.json(), expected, "{case}");
    }
    let counted = client.get("/items/count?min_price=5").await.unwrap();
    assert_eq!(counted.json(), json!({"typed": 2, "sql": 2}), "{}", counted.body);
    for (case, says) in [
        ("wrong_kind", "field `price` is an integer"),
        ("unknown_field", "has no field `colour`"),
        ("list_field", "`tags` is not a scalar"),
    ] {
        let answer = client.get(&format!("/items/where/{case}")).await.unwrap();
        assert_eq!(answer.status, 400, "{case}: {}", answer.body);
        assert!(answer.body.contains(says), "{case}: {}", answer.body);
    }
    service.stop().await;
}

/// A service stopped in the middle of building a view (its page in progress rolls back, as in a crash)
/// resumes from the last committed page when it starts again: every event counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_stopped_midway_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config("views-resume");
    if BACKEND == "sqlite" {
        config.storage = format!("sqlite://{}", dir.path().join("resume.db").display());
    }
    let repository = Repository::open(&config.storage).await.unwrap();
    repository
        .clone()
        .scope(async {
            for i in 0..3000 {
                Item::create(Item { name: format!("r{i}"), price: i, tags: vec![] }).await?;
            }
            Ok::<(), Error>(())
        })
        .await
        .unwrap();
    let first = Launcher::with_config(config.clone()).repository(repository.clone()).start().await.unwrap();
    let client = minos::testing::TestClient::new(first.addr());
    let mut applied = 0;
    for _ in 0..2000 {
        let state = client.get("/views").await.unwrap().json();
        applied = state[1]["sources"][0]["applied"].as_u64().unwrap_or(0);
        if applied > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first.stop().await;
    assert!(applied < 3000, "stopped midway: {applied} applied");
    let second = Launcher::with_config(config).repository(repository).start().await.unwrap();
    let client = minos::testing::TestClient::new(second.addr());
    // The last page's rows are visible a moment before the view is marked live.
    eventually("the build to finish", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            client.get("/items/totals").await.unwrap().json()["created"] == 3000
                && client.get("/views").await.unwrap().json()[1]["state"] == "live"
        }
    })
    .await;
    let state = client.get("/views").await.unwrap().json();
    assert_eq!(state[1]["state"], "live");
    let second_applied = state[1]["sources"][0]["applied"].as_u64().unwrap();
    assert!(
        second_applied + applied <= 3000 && second_applied < 3000,
        "the second run applied only what the first had not committed ({applied} seen before the stop): {state}"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_handlers_of_an_event_see_it_in_the_views() {
    let service = TestService::start(config("views-settle")).await.unwrap();
    let mut created = Vec::new();
    for i in 0..10 {
        created.push(create(&service, &format!("settle{i}"), i).await.0);
    }
    eventually("the handlers to run", Duration::from_secs(10), || async {
        let seen = SEEN_IN_VIEW.lock().unwrap();
        created.iter().all(|uuid| seen.iter().any(|(u, _)| u == uuid))
    })
    .await;
    let seen = SEEN_IN_VIEW.lock().unwrap().clone();
    for uuid in &created {
        assert!(seen.contains(&(*uuid, true)), "{uuid} was not in the view yet");
    }
    service.stop().await;
}
