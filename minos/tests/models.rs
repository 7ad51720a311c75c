//! What the model macros generate: diffs, applying diffs, JSON shapes, the registry.
#![allow(missing_docs)]

use minos::domain::Meta;
use minos::prelude::*;
use minos::testing::models::{Customer, Label, Line, Order};
use minos::{Action, Event, FieldDiff, Model, ModelKind, SetAction};
use serde_json::Map;

#[root_entity(name = "Renamed")]
pub struct Plain {
    pub count: u32,
    #[serde(default)]
    pub added_later: Option<String>,
}

#[external_entity]
pub struct RemoteFoo {
    pub bar: String,
}

#[root_entity]
#[derive(Clone, Debug)]
pub struct AlreadyDerived {
    pub r#type: String,
    pub remote: Option<Ref<RemoteFoo>>,
}

fn diffs<T: Model>(old: &T, new: &T) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    old.diff_fields(new, &mut out).unwrap();
    out
}

#[test]
fn unchanged_models_have_no_diff() {
    let order = Order::sample("ada", 1.0);
    assert!(diffs(&order, &order.clone()).is_empty());
}

#[test]
fn changed_fields_diff_in_declaration_order() {
    let old = Order::sample("ada", 1.0);
    let mut new = old.clone();
    new.paid = true;
    new.customer = "bob".into();
    let out = diffs(&old, &new);
    let names: Vec<&str> = out.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["customer", "paid"]);
    assert_eq!(out[0].value, json!("bob"));
    assert_eq!(out[0].type_name, "String");
    assert_eq!(out[0].action, None);
}

#[test]
fn set_members_diff_one_by_one() {
    let mut old = Order::sample("ada", 1.0);
    let a = old.lines.add(Line {
        product: "a".into(),
        amount: 1,
    });
    old.labels.insert(Label { text: "x".into() });
    let mut new = old.clone();
    new.lines.remove(&a);
    new.labels.insert(Label { text: "y".into() });
    let out = diffs(&old, &new);
    let summary: Vec<(&str, Option<SetAction>, &str)> = out
        .iter()
        .map(|d| (d.name.as_str(), d.action, d.type_name.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("lines", Some(SetAction::Delete), "EntitySet<Line>"),
            ("labels", Some(SetAction::Create), "ValueObjectSet<Label>"),
        ]
    );
    assert_eq!(out[0].value["uuid"], json!(a.to_string()));
    assert_eq!(out[1].value, json!({"text": "y"}));
}

#[test]
fn applying_diffs_typed_and_as_json_agree() {
    let old = Order::sample("ada", 1.0);
    let mut new = old.clone();
    new.lines.add(Line {
        product: "p".into(),
        amount: 2,
    });
    new.labels.insert(Label { text: "l".into() });
    new.note = Some("n".into());
    new.tags.push("t".into());
    let out = diffs(&old, &new);

    let mut typed = old.clone();
    for diff in &out {
        typed.apply_field(diff).unwrap();
    }
    assert_eq!(typed, new);

    let mut json = match serde_json::to_value(&old).unwrap() {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    for diff in &out {
        diff.apply_json(&mut json).unwrap();
    }
    let from_json: Order = serde_json::from_value(serde_json::Value::Object(json)).unwrap();
    assert_eq!(from_json, new);
}

#[test]
fn unknown_fields_in_a_diff_are_errors() {
    let mut plain = Plain {
        count: 1,
        added_later: None,
    };
    let diff = FieldDiff::whole("nope", "u32", json!(1));
    let error = plain.apply_field(&diff).unwrap_err();
    assert_eq!(error.to_string(), "`Renamed` has no field `nope`");
    let bad = FieldDiff::whole("count", "u32", json!("not a number"));
    assert!(plain.apply_field(&bad).is_err());
    assert_eq!(plain.count, 1);
}

#[test]
fn names_kinds_and_fields_come_from_the_declaration() {
    assert_eq!(<Plain as Model>::NAME, "Renamed");
    assert_eq!(<Order as Model>::KIND, ModelKind::RootEntity);
    assert_eq!(<Line as Model>::KIND, ModelKind::Entity);
    assert_eq!(<Label as Model>::KIND, ModelKind::ValueObject);
    assert_eq!(<RemoteFoo as Model>::KIND, ModelKind::ExternalEntity);
    assert_eq!(<AlreadyDerived as Model>::FIELDS, ["type", "remote"]);
    assert_eq!(<Plain as Model>::FIELDS, ["count", "added_later"]);
}

#[test]
fn models_are_registered() {
    let models = minos::registry::models();
    let find = |name: &str| models.iter().find(|m| m.name == name).copied();
    // The test kit's sample models (`minos::testing::models::Order`, …) belong to no service.
    assert!(find("Order").is_none() && find("Customer").is_none());
    let renamed = find("Renamed").expect("Renamed is registered");
    assert!(renamed.file.ends_with("models.rs"));
    assert!(renamed.line > 0);
    let roots = minos::registry::root_entity_names();
    assert!(roots.contains(&"Renamed"), "{roots:?}");
    assert_eq!(
        models.iter().find(|m| m.name == "Renamed").map(|m| m.kind),
        Some(ModelKind::RootEntity)
    );
    assert!(!roots.contains(&"Line") && !roots.contains(&"RemoteFoo"));
}

#[test]
fn serde_default_fields_read_old_snapshots() {
    let old: Plain = serde_json::from_value(json!({"count": 3})).unwrap();
    assert_eq!(old.added_later, None);
}

fn meta() -> Meta {
    let now = minos::chrono::Utc::now();
    Meta {
        uuid: Uuid::new_v4(),
        version: 3,
        created_at: now,
        updated_at: now,
    }
}

#[test]
fn a_root_serializes_with_its_meta_and_back() {
    let root = Root::from_parts(meta(), Customer { name: "ada".into() });
    let value = serde_json::to_value(&root).unwrap();
    assert_eq!(value["name"], json!("ada"));
    assert_eq!(value["uuid"], json!(root.uuid().to_string()));
    assert_eq!(value["version"], json!(3));
    let back: Root<Customer> = serde_json::from_value(value).unwrap();
    assert_eq!(back, root);
    let missing = serde_json::from_value::<Root<Customer>>(json!({"name": "x"})).unwrap_err();
    assert!(
        missing.to_string().contains("missing field `uuid`"),
        "{missing}"
    );
}

#[test]
fn refs_hold_the_uuid_and_once_resolved_the_model() {
    let remote = Root::from_parts(meta(), RemoteFoo { bar: "b".into() });
    let mut reference: Ref<RemoteFoo> = Ref::new(remote.uuid());
    assert!(!reference.is_resolved());
    assert_eq!(
        serde_json::to_value(&reference).unwrap(),
        json!(remote.uuid().to_string())
    );
    reference.set_model(remote.clone()).unwrap();
    assert_eq!(reference.model().unwrap().bar, "b");
    // Still stored as the uuid alone.
    assert_eq!(
        serde_json::to_value(&reference).unwrap(),
        json!(remote.uuid().to_string())
    );
    let other = Root::from_parts(meta(), RemoteFoo { bar: "c".into() });
    assert!(reference.set_model(other).is_err());
    let from_object: Ref<RemoteFoo> =
        serde_json::from_value(json!({"uuid": remote.uuid().to_string(), "bar": "b"})).unwrap();
    assert_eq!(from_object, reference);
    assert!(serde_json::from_value::<Ref<RemoteFoo>>(json!(42)).is_err());
}

#[test]
fn entity_sets_serialize_members_with_their_uuid() {
    let mut order = Order::sample("ada", 1.0);
    let uuid = order.lines.add(Line {
        product: "tea".into(),
        amount: 2,
    });
    let value = serde_json::to_value(&order.lines).unwrap();
    assert_eq!(
        value,
        json!([{"uuid": uuid.to_string(), "product": "tea", "amount": 2}])
    );
    let back: EntitySet<Line> = serde_json::from_value(value).unwrap();
    assert_eq!(back, order.lines);
    let no_uuid = serde_json::from_value::<EntitySet<Line>>(json!([{"product": "x", "amount": 1}]));
    assert!(no_uuid.is_err());
}

#[test]
fn replay_rejects_broken_streams() {
    let uuid = Uuid::new_v4();
    let now = minos::chrono::Utc::now();
    let event = |version, action, fields_diff| Event {
        uuid,
        name: "Customer".into(),
        version,
        action,
        created_at: now,
        fields_diff,
    };
    let create = event(
        1,
        Action::Create,
        vec![FieldDiff::whole("name", "String", json!("a"))],
    );
    let update = event(
        2,
        Action::Update,
        vec![FieldDiff::whole("name", "String", json!("b"))],
    );
    let gap = event(3, Action::Update, vec![]);
    let delete = event(3, Action::Delete, vec![]);
    let root = Root::<Customer>::replay([&create, &update])
        .unwrap()
        .unwrap();
    assert_eq!((root.name.as_str(), root.version()), ("b", 2));
    assert!(Root::<Customer>::replay([&update]).is_err());
    assert!(Root::<Customer>::replay([&create, &gap]).is_err());
    assert!(Root::<Customer>::replay([&create, &update, &delete])
        .unwrap()
        .is_none());
    assert!(Root::<Customer>::replay([&create, &update, &delete, &gap]).is_err());
}

#[test]
fn domain_messages_follow_the_original_topics() {
    let uuid = Uuid::new_v4();
    let event = Event {
        uuid,
        name: "Foo".into(),
        version: 4,
        action: Action::Update,
        created_at: minos::chrono::Utc::now(),
        fields_diff: vec![
            FieldDiff::whole("bar", "String", json!("x")),
            FieldDiff::incremental(
                "items",
                "EntitySet<Item>".into(),
                json!({"uuid": uuid}),
                SetAction::Delete,
            ),
        ],
    };
    let messages = event.domain_messages().unwrap();
    let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["FooUpdated", "FooUpdated.bar", "FooUpdated.items.delete"]
    );
    assert!(messages.iter().all(|m| m.key == uuid.to_string()));
    assert_eq!(
        messages[2].content["fields_diff"][0]["action"],
        json!("delete")
    );
    assert_eq!(messages[2].content["version"], json!(4));
}

#[tokio::test]
async fn operations_without_a_repository_say_how_to_get_one() {
    let error = Customer::create(Customer { name: "x".into() })
        .await
        .unwrap_err();
    assert!(matches!(error, minos::Error::NoRepository));
    assert!(
        error.to_string().contains("Repository::set_default"),
        "{error}"
    );
}

#[test]
fn json_state_rejects_incremental_diffs_on_scalars() {
    let mut state = Map::new();
    state.insert("name".into(), json!("a"));
    let diff = FieldDiff::incremental(
        "name",
        "EntitySet<X>".into(),
        json!({"uuid": "u"}),
        SetAction::Create,
    );
    assert!(diff.apply_json(&mut state).is_err());
}
