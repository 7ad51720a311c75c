//! Resolving `Ref<T>`: this service's root entities from its own store, another service's through
//! `_Get{Type}Snapshots` on the broker, one request per type.

use std::collections::HashMap;

use serde_json::{json, Value};
use uuid::Uuid;

use super::Context;
use crate::domain::{ModelKind, Ref, Referable, Root};
use crate::error::{Error, Result};
use crate::repository::Repository;

impl<T: Referable> Ref<T> {
    /// The referenced model, fetched if not resolved yet (see [`resolve_all`]).
    pub async fn resolve(&mut self) -> Result<&Root<T>> {
        resolve_all(std::slice::from_mut(self)).await?;
        self.model().ok_or_else(|| {
            Error::not_found(format!("{} {} could not be resolved", T::NAME, self.uuid()))
        })
    }
}

/// Resolves every reference that is not resolved yet, with one lookup for all of them: this service's
/// root entities from its repository, external entities with one `_Get{Type}Snapshots` request to the
/// service that owns them. Unknown uuids are a 404 error naming them; an unreachable service a timeout.
pub async fn resolve_all<T: Referable>(refs: &mut [Ref<T>]) -> Result<()> {
    let mut uuids: Vec<Uuid> = refs
        .iter()
        .filter(|r| !r.is_resolved())
        .map(Ref::uuid)
        .collect();
    uuids.sort();
    uuids.dedup();
    if uuids.is_empty() {
        return Ok(());
    }
    let mut models: HashMap<Uuid, Root<T>> = HashMap::new();
    if T::KIND == ModelKind::RootEntity {
        let repository = Repository::current()?;
        let mut missing = Vec::new();
        for uuid in &uuids {
            match repository.store().snapshot(T::NAME, *uuid).await? {
                Some(snapshot) if snapshot.data.is_some() => {
                    let root: Root<T> =
                        serde_json::from_value(snapshot.document()).map_err(|e| {
                            Error::undecodable(format!("a stored {} snapshot", T::NAME), e)
                        })?;
                    models.insert(*uuid, root);
                }
                _ => missing.push(uuid.to_string()),
            }
        }
        if !missing.is_empty() {
            return Err(Error::not_found(format!(
                "no {} with uuid {}",
                T::NAME,
                missing.join(", ")
            )));
        }
    } else {
        let client = Context::current()?.client().clone();
        let topic = crate::messaging::topics::snapshots(T::NAME);
        let reply = client.send(&topic, json!({ "uuids": uuids })).await?;
        let found: Vec<Value> = reply.into_content()?;
        for value in found {
            let root: Root<T> = serde_json::from_value(value).map_err(|e| {
                Error::undecodable(format!("the {} answered on `{topic}`", T::NAME), e)
            })?;
            models.insert(root.uuid(), root);
        }
    }
    for reference in refs.iter_mut().filter(|r| !r.is_resolved()) {
        if let Some(model) = models.get(&reference.uuid()) {
            let _ = reference.set_model(model.clone());
        }
    }
    Ok(())
}

/// Answers `_Get{Type}Snapshots` for the root entity `name` with `{"uuids": [...]}`: the roots in the order
/// asked, each with its fields, uuid, version and timestamps; a 404 naming the uuids that are unknown or
/// deleted, a 400 for other content.
pub(crate) async fn answer_snapshots(
    name: &'static str,
    message: crate::messaging::BrokerMessage,
) -> Result<crate::routing::Response> {
    #[derive(serde::Deserialize)]
    struct Wanted {
        uuids: Vec<Uuid>,
    }
    let wanted: Wanted = serde_json::from_value(message.payload.content).map_err(|e| {
        Error::bad_request(format!(
            "`{}` takes {{\"uuids\": [...]}}: {e}",
            message.topic
        ))
    })?;
    let repository = Repository::current()?;
    let store = repository.store();
    let mut found = Vec::with_capacity(wanted.uuids.len());
    let mut missing = Vec::new();
    for uuid in wanted.uuids {
        match store.snapshot(name, uuid).await? {
            Some(snapshot) if snapshot.data.is_some() => found.push(snapshot.document()),
            _ => missing.push(uuid.to_string()),
        }
    }
    if !missing.is_empty() {
        return Err(Error::not_found(format!(
            "no {name} with uuid {}",
            missing.join(", ")
        )));
    }
    Ok(crate::routing::Response::json(found))
}
