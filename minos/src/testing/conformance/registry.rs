//! The registry port: instances, leases, health and the version that tells readers what changed.

use serde_json::json;

use crate::prelude::*;
use crate::store::InstanceRecord;

fn instance(service: &str, id: &str, at: DateTime<Utc>) -> InstanceRecord {
    InstanceRecord {
        service: service.into(),
        instance: id.into(),
        address: "127.0.0.1".into(),
        port: 4545,
        endpoints: json!([["GET", "/foos/{uuid}"], ["POST", "/foos"]]),
        status: true,
        healthy: true,
        registered_at: at,
        last_seen: at,
    }
}

/// Instances are registered (replaced on re-registration), touched, marked unhealthy, removed one or
/// all at once, and expired after their lease; every change bumps the version, a heartbeat does not.
pub async fn registry_instances_have_leases_and_a_version(repo: Repository) {
    let store = repo.store();
    let start = crate::store::now();
    let (version, listed) = store.registry().await.unwrap();
    assert!(listed.is_empty());
    let v1 = store
        .register_instance(&instance("foo", "a", start))
        .await
        .unwrap();
    assert!(v1 > version);
    let v2 = store
        .register_instance(&instance("foo", "b", start))
        .await
        .unwrap();
    let mut replaced = instance("bar", "x", start);
    store.register_instance(&replaced).await.unwrap();
    replaced.port = 4546;
    let v3 = store.register_instance(&replaced).await.unwrap();
    assert!(v1 < v2 && v2 < v3);
    let (version, listed) = store.registry().await.unwrap();
    assert_eq!(version, v3);
    let names: Vec<(&str, &str)> = listed
        .iter()
        .map(|r| (r.service.as_str(), r.instance.as_str()))
        .collect();
    assert_eq!(names, [("bar", "x"), ("foo", "a"), ("foo", "b")]);
    assert_eq!(listed[0], replaced, "read back as written");

    // Heartbeats move the lease without changing the version.
    let later = start + chrono::Duration::seconds(30);
    assert!(store.touch_instance("foo", "a", later).await.unwrap());
    assert!(!store.touch_instance("foo", "zzz", later).await.unwrap());
    let (version, listed) = store.registry().await.unwrap();
    assert_eq!(version, v3);
    assert_eq!(listed[1].last_seen, later);

    // Health: a change bumps the version, the same verdict again does not.
    assert!(store.set_instance_health("foo", "b", false).await.unwrap());
    let (unhealthy, listed) = store.registry().await.unwrap();
    assert!(unhealthy > v3);
    assert!(!listed[2].healthy);
    assert!(store.set_instance_health("foo", "b", false).await.unwrap());
    assert_eq!(store.registry().await.unwrap().0, unhealthy);
    assert!(!store.set_instance_health("nope", "b", true).await.unwrap());

    // Leases: instances not seen since a time are expired and returned.
    let expired = store
        .expire_instances(start + chrono::Duration::seconds(10))
        .await
        .unwrap();
    let expired: Vec<&str> = expired.iter().map(|r| r.instance.as_str()).collect();
    assert_eq!(expired, ["x", "b"]);
    let (version, listed) = store.registry().await.unwrap();
    assert!(version > unhealthy);
    assert_eq!(listed.len(), 1);
    assert!(store.expire_instances(start).await.unwrap().is_empty());
    assert_eq!(store.registry().await.unwrap().0, version);

    // Removing one instance, then a whole service.
    store
        .register_instance(&instance("foo", "c", later))
        .await
        .unwrap();
    assert_eq!(store.remove_instances("foo", Some("a")).await.unwrap(), 1);
    assert_eq!(store.remove_instances("foo", Some("a")).await.unwrap(), 0);
    store
        .register_instance(&instance("foo", "d", later))
        .await
        .unwrap();
    assert_eq!(store.remove_instances("foo", None).await.unwrap(), 2);
    let before = store.registry().await.unwrap().0;
    assert_eq!(store.remove_instances("foo", None).await.unwrap(), 0);
    let (after, listed) = store.registry().await.unwrap();
    assert_eq!(after, before, "removing nothing changes nothing");
    assert!(listed.is_empty());
}
