//! Reading through transactions: the store's snapshots with the held writes of a chain of transactions,
//! then a scope's buffered writes, applied in order.

use indexmap::IndexMap;
use uuid::Uuid;

use crate::store::{HeldWrites, Query, Snapshot, Store, StoreError};

/// What a writer sees: the store, then the writes held by `chain` (outermost first), then `buffered`.
pub(crate) struct View<'a> {
    store: &'a dyn Store,
    chain: &'a [Uuid],
    buffered: HeldWrites,
}

impl<'a> View<'a> {
    /// The view through `chain` and `buffered`.
    pub(crate) fn new(store: &'a dyn Store, chain: &'a [Uuid], buffered: HeldWrites) -> Self {
        View {
            store,
            chain,
            buffered,
        }
    }

    /// Whether the view is the store itself (nothing held or buffered on top).
    fn is_plain(&self) -> bool {
        self.chain.is_empty() && self.buffered.is_empty()
    }

    /// The writes on top of the store, in the order they apply: each chain transaction's held writes
    /// (read from the store), then the buffered ones.
    async fn writes_on_top(&self) -> Result<HeldWrites, StoreError> {
        let held = futures_util::future::try_join_all(
            self.chain
                .iter()
                .map(|transaction| self.store.held(*transaction)),
        )
        .await?;
        let mut writes: HeldWrites = held.into_iter().flatten().collect();
        writes.extend(self.buffered.iter().cloned());
        Ok(writes)
    }

    /// The snapshot of one root as seen here.
    pub(crate) async fn snapshot(
        &self,
        name: &str,
        uuid: Uuid,
    ) -> Result<Option<Snapshot>, StoreError> {
        if self.is_plain() {
            return self.store.snapshot(name, uuid).await;
        }
        // Both reads at once: a round trip less on a remote store.
        let (mut snapshot, on_top) =
            tokio::try_join!(self.store.snapshot(name, uuid), self.writes_on_top())?;
        for (event, _) in on_top {
            if event.uuid == uuid && event.name == name {
                snapshot = Some(Snapshot::next(snapshot.as_ref(), &event)?);
            }
        }
        Ok(snapshot)
    }

    /// Live roots of type `name` matching `query` as seen here: the store's answer with the roots the
    /// layers touched replaced by their state here, then sorted and limited again.
    pub(crate) async fn find(
        &self,
        name: &str,
        query: &Query,
    ) -> Result<Vec<Snapshot>, StoreError> {
        if self.is_plain() {
            return self.store.find(name, query).await;
        }
        let touched = self.touched(name).await?;
        if touched.is_empty() {
            return self.store.find(name, query).await;
        }
        let unlimited = Query {
            limit: None,
            ..query.clone()
        };
        let mut found: Vec<Snapshot> = self
            .store
            .find(name, &unlimited)
            .await?
            .into_iter()
            .filter(|s| !touched.contains_key(&s.uuid))
            .collect();
        found.extend(
            touched
                .into_values()
                .flatten()
                .filter(|s| s.data.is_some() && query.condition.matches(s)),
        );
        if let Some(ordering) = &query.ordering {
            found.sort_by(|a, b| ordering.compare(a, b));
        }
        found.truncate(query.limit.unwrap_or(usize::MAX));
        Ok(found)
    }

    /// The roots of type `name` that the layers change, with their state here.
    async fn touched(&self, name: &str) -> Result<IndexMap<Uuid, Option<Snapshot>>, StoreError> {
        let mut touched: IndexMap<Uuid, Option<Snapshot>> = IndexMap::new();
        for (event, _) in self.writes_on_top().await? {
            if event.name != name {
                continue;
            }
            let previous = match touched.get(&event.uuid) {
                Some(snapshot) => snapshot.clone(),
                None => self.store.snapshot(name, event.uuid).await?,
            };
            touched.insert(event.uuid, Some(Snapshot::next(previous.as_ref(), &event)?));
        }
        Ok(touched)
    }
}
