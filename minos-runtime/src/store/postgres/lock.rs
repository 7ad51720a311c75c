//! PostgreSQL advisory locks: [`PostgresStore::try_lock`], the guard that holds one, and the outbox relay
//! lease built on them.

use deadpool_postgres::Object;

use crate::store::StoreError;

use super::{db_error, PostgresStore};

/// The PostgreSQL advisory lock key of `key`: the same in every process and release.
pub(crate) fn lock_key(key: &str) -> i64 {
    crate::hash::stable_hash(key) as i64
}

impl PostgresStore {
    /// Takes the advisory lock named `key` if it is free; it is held until the returned guard is released
    /// or dropped (or its connection ends).
    pub async fn try_lock(&self, key: &str) -> Result<Option<AdvisoryLock>, StoreError> {
        let client = self.client().await?;
        let id = lock_key(key);
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&id])
            .await
            .map_err(db_error)?;
        Ok(row.get::<_, bool>(0).then_some(AdvisoryLock {
            client: Some(client),
            id,
        }))
    }

    /// The lock that makes one relay publish this store's outbox (one per schema).
    pub(super) async fn try_relay_lock(&self) -> Result<Option<AdvisoryLock>, StoreError> {
        let key = format!(
            "minos:outbox-relay:{}",
            self.schema.as_deref().unwrap_or("public")
        );
        self.try_lock(&key).await
    }
}

impl crate::store::lease::Guard for AdvisoryLock {
    fn is_held(&self) -> bool {
        AdvisoryLock::is_held(self)
    }
}

/// A held PostgreSQL advisory lock.
pub struct AdvisoryLock {
    client: Option<Object>,
    id: i64,
}

impl std::fmt::Debug for AdvisoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisoryLock")
            .field("id", &self.id)
            .finish()
    }
}

impl AdvisoryLock {
    /// Whether the lock is still held: its connection is open (a lock dies with its connection).
    pub fn is_held(&self) -> bool {
        self.client
            .as_ref()
            .is_some_and(|client| !client.is_closed())
    }

    /// The connection holding the lock.
    pub(super) fn client(&self) -> Option<&Object> {
        self.client.as_ref()
    }

    /// Releases the lock.
    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(client) = self.client.take() {
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&self.id])
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let id = self.id;
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = client
                        .execute("SELECT pg_advisory_unlock($1)", &[&id])
                        .await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable() {
        assert_eq!(
            lock_key("minos:migrations:public"),
            lock_key("minos:migrations:public")
        );
        assert_ne!(lock_key("a"), lock_key("b"));
    }
}
