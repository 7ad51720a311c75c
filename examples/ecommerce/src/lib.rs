//! What the ecommerce services share: the JSON shapes the original application's clients expect.
//!
//! The original serialises an aggregate as its fields plus `uuid`, `version`, and `created_at` /
//! `updated_at` as integers (microseconds since the Unix epoch, UTC); clients written for it (its
//! tavern tests, its front-end) read them so.

use minos::chrono::{DateTime, Utc};
use minos::serde_json::Value;
use minos::{Root, RootEntity};

/// Microseconds since the Unix epoch: how the original writes times.
pub fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// A stored root as the original answers it: its fields, `uuid`, `version`, and the two times in
/// microseconds.
pub fn aggregate<T: RootEntity>(root: &Root<T>) -> minos::Result<Value> {
    let mut out = minos::serde_json::to_value(root)
        .map_err(|e| minos::Error::with_status(500, format!("encoding {}: {e}", T::NAME)))?;
    if let Value::Object(map) = &mut out {
        map.insert("created_at".into(), micros(root.created_at()).into());
        map.insert("updated_at".into(), micros(root.updated_at()).into());
    }
    Ok(out)
}

/// Refuses (403) a caller who is neither the customer `owner` (the token's subject) nor an admin.
pub fn own_or_admin(request: &minos::Request, owner: minos::Uuid) -> minos::Result<()> {
    match request.principal() {
        Some(caller) if caller.subject == owner.to_string() || caller.has_role("admin") => Ok(()),
        Some(_) => Err(minos::Error::with_status(
            403,
            "this belongs to another customer",
        )),
        None => Err(minos::Error::with_status(
            401,
            "this route needs the customer's access token: log in with GET /login",
        )),
    }
}
