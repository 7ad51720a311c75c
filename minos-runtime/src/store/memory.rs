//! The in-memory backend: every port behind one mutex. For tests and ephemeral services.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use indexmap::IndexMap;
use uuid::Uuid;

use super::{
    check_applies, EventFilter, EventStore, InboxEntry, InboxStore, OutboxRecord, OutboxStore,
    Query, RelayLease, Snapshot, SnapshotStore, StoreError, StoredEvent,
};
use chrono::{DateTime, Utc};

use super::{
    ExecutionRecord, HeldWrites, InstanceRecord, RegistryStore, SagaStore, TransactionStore,
};
use crate::domain::{DomainMessage, Event, ExecutionStatus, TransactionEntry, TransactionStatus};

/// Keeps everything in process memory; lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Whether a relay holds this store's lease: one relay publishes its outbox.
    relaying: Arc<AtomicBool>,
}

/// Releases a memory store's relay lease when dropped.
struct Relaying(Arc<AtomicBool>);

impl Drop for Relaying {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<StoredEvent>,
    // Insertion order is the default order of query results, as with the SQL backends.
    snapshots: IndexMap<Uuid, Snapshot>,
    outbox: std::collections::VecDeque<OutboxRecord>,
    next_outbox_id: i64,
    // Each handled message, with when it was recorded (for retention) and the reply kept with it.
    inbox: std::collections::HashMap<InboxEntry, (DateTime<Utc>, Option<serde_json::Value>)>,
    transactions: std::collections::HashMap<Uuid, TransactionEntry>,
    held: std::collections::HashMap<Uuid, HeldWrites>,
    executions: std::collections::HashMap<Uuid, ExecutionRecord>,
    claims: std::collections::HashMap<(Option<Uuid>, Uuid), Uuid>,
    // By service, then instance id: the order listings answer in.
    instances: std::collections::BTreeMap<(String, String), InstanceRecord>,
    registry_version: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written step: every step below writes only
        // after all its checks passed.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Records `entry` (keyed by consumer and identifier, with its reply when that is small enough to
    /// keep); `false`, changing nothing, when it is already recorded.
    fn record_inbox(&mut self, entry: &InboxEntry) -> bool {
        use std::collections::hash_map::Entry;
        match self
            .inbox
            .entry(InboxEntry::new(entry.consumer.clone(), entry.identifier))
        {
            Entry::Occupied(_) => false,
            Entry::Vacant(vacant) => {
                let reply = super::stored_reply_text(entry).and(entry.reply.clone());
                vacant.insert((super::now(), reply));
                true
            }
        }
    }

    /// Checks every append against the state left by the ones before it; writes nothing.
    fn check_unit(&self, appends: &[(Event, Vec<DomainMessage>)]) -> Result<(), StoreError> {
        let mut staged: std::collections::HashMap<Uuid, Snapshot> =
            std::collections::HashMap::new();
        for (event, _) in appends {
            let current = staged
                .get(&event.uuid)
                .or_else(|| self.snapshots.get(&event.uuid));
            check_applies(current, event)?;
            let next = Snapshot::next(current, event)?;
            staged.insert(event.uuid, next);
        }
        Ok(())
    }

    fn write(
        &mut self,
        event: &Event,
        messages: &[DomainMessage],
    ) -> Result<StoredEvent, StoreError> {
        let current = self.snapshots.get(&event.uuid);
        check_applies(current, event)?;
        let snapshot = Snapshot::next(current, event)?;
        let stored = StoredEvent {
            id: self.events.len() as i64 + 1,
            commit: 0,
            event: event.clone(),
        };
        self.events.push(stored.clone());
        self.snapshots.insert(event.uuid, snapshot);
        let position = stored.position().to_string();
        for message in messages {
            self.next_outbox_id += 1;
            let mut message = message.clone();
            message
                .headers
                .insert(crate::messaging::headers::POSITION.into(), position.clone());
            let record = OutboxRecord {
                id: self.next_outbox_id,
                message,
                created_at: event.created_at,
            };
            self.outbox.push_back(record);
        }
        Ok(stored)
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        event: &Event,
        messages: &[DomainMessage],
    ) -> Result<StoredEvent, StoreError> {
        self.lock().write(event, messages)
    }

    async fn commit_unit(
        &self,
        appends: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut inner = self.lock();
        if let Some(entry) = inbox {
            if inner.inbox.contains_key(entry) {
                return Err(StoreError::AlreadyProcessed {
                    consumer: entry.consumer.clone(),
                    identifier: entry.identifier,
                });
            }
        }
        inner.check_unit(appends)?;
        let stored = appends
            .iter()
            .map(|(event, messages)| inner.write(event, messages))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(entry) = inbox {
            inner.record_inbox(entry);
        }
        Ok(stored)
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = self.lock();
        // Ids are the positions in the list, from 1: start after `after_id` directly.
        let start = filter
            .after_id
            .map_or(0, |id| id.clamp(0, inner.events.len() as i64) as usize);
        let matching = inner.events[start..].iter().filter(|e| {
            filter.uuid.is_none_or(|u| e.event.uuid == u)
                && filter.name.as_ref().is_none_or(|n| &e.event.name == n)
                && filter.after_id.is_none_or(|id| e.id > id)
        });
        Ok(matching
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl SnapshotStore for MemoryStore {
    async fn snapshot(&self, name: &str, uuid: Uuid) -> Result<Option<Snapshot>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .snapshots
            .get(&uuid)
            .filter(|s| s.name == name)
            .cloned())
    }

    async fn find(&self, name: &str, query: &Query) -> Result<Vec<Snapshot>, StoreError> {
        query.validate()?;
        let inner = self.lock();
        let matching = inner
            .snapshots
            .values()
            .filter(|s| s.name == name && s.data.is_some() && query.condition.matches(*s));
        let limit = query.limit.unwrap_or(usize::MAX);
        let Some(ordering) = &query.ordering else {
            return Ok(matching.take(limit).cloned().collect());
        };
        let mut found: Vec<&Snapshot> = matching.collect();
        // A stable sort keeps insertion order among equal keys.
        found.sort_by(|a, b| ordering.compare(*a, *b));
        Ok(found.into_iter().take(limit).cloned().collect())
    }
}

#[async_trait]
impl TransactionStore for MemoryStore {
    async fn save_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        self.lock().transactions.insert(entry.uuid, entry.clone());
        Ok(())
    }

    async fn transaction(&self, uuid: Uuid) -> Result<Option<TransactionEntry>, StoreError> {
        Ok(self.lock().transactions.get(&uuid).cloned())
    }

    async fn transactions_in(
        &self,
        statuses: &[TransactionStatus],
        before: DateTime<Utc>,
    ) -> Result<Vec<TransactionEntry>, StoreError> {
        let inner = self.lock();
        let mut found: Vec<TransactionEntry> = inner
            .transactions
            .values()
            .filter(|t| statuses.contains(&t.status) && t.updated_at < before)
            .cloned()
            .collect();
        found.sort_by_key(|t| (t.updated_at, t.uuid));
        Ok(found)
    }

    async fn hold(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !writes.is_empty() {
            match inner.transactions.get(&transaction) {
                None => return Err(StoreError::UnknownTransaction { transaction }),
                Some(entry) if entry.status != TransactionStatus::Pending => {
                    return Err(StoreError::TransactionClosed {
                        transaction,
                        status: entry.status,
                    })
                }
                Some(_) => {}
            }
        }
        if let Some(entry) = inbox {
            if !inner.record_inbox(entry) {
                return Err(StoreError::AlreadyProcessed {
                    consumer: entry.consumer.clone(),
                    identifier: entry.identifier,
                });
            }
        }
        inner
            .held
            .entry(transaction)
            .or_default()
            .extend(writes.iter().cloned());
        Ok(())
    }

    async fn held(&self, transaction: Uuid) -> Result<HeldWrites, StoreError> {
        Ok(self
            .lock()
            .held
            .get(&transaction)
            .cloned()
            .unwrap_or_default())
    }

    async fn claim(
        &self,
        destination: Option<Uuid>,
        transaction: Uuid,
        roots: &[Uuid],
    ) -> Result<Option<(Uuid, Uuid)>, StoreError> {
        let mut inner = self.lock();
        for root in roots {
            if let Some(holder) = inner.claims.get(&(destination, *root)) {
                if *holder != transaction {
                    return Ok(Some((*root, *holder)));
                }
            }
        }
        for root in roots {
            inner.claims.insert((destination, *root), transaction);
        }
        Ok(None)
    }

    async fn release(&self, transaction: Uuid) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.claims.retain(|_, holder| *holder != transaction);
        inner.held.remove(&transaction);
        Ok(())
    }

    async fn settle_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        // Under one lock, as holds are: a hold lands before (and is forgotten) or after (and is
        // refused).
        let mut inner = self.lock();
        inner.claims.retain(|_, holder| *holder != entry.uuid);
        inner.held.remove(&entry.uuid);
        inner.transactions.insert(entry.uuid, entry.clone());
        Ok(())
    }
}

#[async_trait]
impl SagaStore for MemoryStore {
    async fn save_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        self.lock().executions.insert(record.uuid, record.clone());
        Ok(())
    }

    async fn execution(&self, uuid: Uuid) -> Result<Option<ExecutionRecord>, StoreError> {
        Ok(self.lock().executions.get(&uuid).cloned())
    }

    async fn executions(
        &self,
        status: Option<ExecutionStatus>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let inner = self.lock();
        let mut found: Vec<ExecutionRecord> = inner
            .executions
            .values()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .cloned()
            .collect();
        found.sort_by_key(|r| std::cmp::Reverse((r.updated_at, r.uuid)));
        found.truncate(limit);
        Ok(found)
    }

    async fn stale_executions(
        &self,
        status: ExecutionStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let inner = self.lock();
        let mut found: Vec<ExecutionRecord> = inner
            .executions
            .values()
            .filter(|r| r.status == status && r.updated_at < before)
            .cloned()
            .collect();
        found.sort_by_key(|r| (r.updated_at, r.uuid));
        found.truncate(limit);
        Ok(found)
    }
}

#[async_trait]
impl InboxStore for MemoryStore {
    async fn is_processed(&self, entry: &InboxEntry) -> Result<bool, StoreError> {
        Ok(self.lock().inbox.contains_key(entry))
    }

    async fn recorded_reply(
        &self,
        entry: &InboxEntry,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .lock()
            .inbox
            .get(entry)
            .and_then(|(_, reply)| reply.clone()))
    }
}

#[async_trait]
impl super::RetentionStore for MemoryStore {
    async fn purge(
        &self,
        kind: super::Retained,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError> {
        use super::Retained;
        let mut inner = self.lock();
        let inner = &mut *inner;
        let removed = match kind {
            // Published messages are dropped as soon as they are marked sent.
            Retained::Outbox => 0,
            Retained::Inbox => {
                let old = oldest(&inner.inbox, limit, |(at, _)| *at < before);
                for entry in &old {
                    inner.inbox.remove(entry);
                }
                old.len()
            }
            Retained::Sagas => {
                let old = oldest(&inner.executions, limit, |r| {
                    matches!(
                        r.status,
                        ExecutionStatus::Finished | ExecutionStatus::Errored
                    ) && r.updated_at < before
                });
                for uuid in &old {
                    inner.executions.remove(uuid);
                }
                old.len()
            }
            Retained::Transactions => {
                let old = oldest(&inner.transactions, limit, |t| {
                    matches!(
                        t.status,
                        TransactionStatus::Committed | TransactionStatus::Rejected
                    ) && t.updated_at < before
                });
                for uuid in &old {
                    inner.transactions.remove(uuid);
                    inner.held.remove(uuid);
                }
                inner.claims.retain(|_, holder| !old.contains(holder));
                old.len()
            }
        };
        Ok(removed as u64)
    }
}

/// Up to `limit` keys of `map` whose values are `old` (retention's candidates).
fn oldest<K: Clone, V>(
    map: &std::collections::HashMap<K, V>,
    limit: usize,
    old: impl Fn(&V) -> bool,
) -> Vec<K> {
    map.iter()
        .filter(|(_, value)| old(value))
        .map(|(key, _)| key.clone())
        .take(limit)
        .collect()
}

#[async_trait]
impl OutboxStore for MemoryStore {
    async fn pending_in(
        &self,
        ids: std::ops::Range<i64>,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let inner = self.lock();
        // Rows are kept in id order.
        let start = inner.outbox.partition_point(|record| record.id < ids.start);
        Ok(inner
            .outbox
            .iter()
            .skip(start)
            .take_while(|record| record.id < ids.end)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        // Sent messages are dropped: nothing reads them again.
        let sent: std::collections::HashSet<i64> = ids.iter().copied().collect();
        inner.outbox.retain(|record| !sent.contains(&record.id));
        Ok(())
    }

    /// One relay at a time (two services handed the same store share its outbox): the others wait.
    async fn relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        use std::sync::atomic::Ordering;
        if self
            .relaying
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(None);
        }
        let lease = RelayLease::holding(Relaying(Arc::clone(&self.relaying)));
        Ok(Some(lease.after(self.lock().next_outbox_id)))
    }
}

#[async_trait]
impl RegistryStore for MemoryStore {
    async fn register_instance(&self, record: &InstanceRecord) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        inner.instances.insert(
            (record.service.clone(), record.instance.clone()),
            record.clone(),
        );
        inner.registry_version += 1;
        Ok(inner.registry_version)
    }

    async fn touch_instance(
        &self,
        service: &str,
        instance: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let key = (service.to_owned(), instance.to_owned());
        Ok(match inner.instances.get_mut(&key) {
            Some(record) => {
                record.last_seen = at;
                true
            }
            None => false,
        })
    }

    async fn set_instance_health(
        &self,
        service: &str,
        instance: &str,
        healthy: bool,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let key = (service.to_owned(), instance.to_owned());
        let changed = match inner.instances.get_mut(&key) {
            Some(record) if record.healthy != healthy => {
                record.healthy = healthy;
                true
            }
            Some(_) => false,
            None => return Ok(false),
        };
        if changed {
            inner.registry_version += 1;
        }
        Ok(true)
    }

    async fn remove_instances(
        &self,
        service: &str,
        instance: Option<&str>,
    ) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let before = inner.instances.len();
        inner
            .instances
            .retain(|(s, i), _| !(s == service && instance.is_none_or(|wanted| wanted == i)));
        let removed = before - inner.instances.len();
        if removed > 0 {
            inner.registry_version += 1;
        }
        Ok(removed)
    }

    async fn expire_instances(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut inner = self.lock();
        let expired: Vec<InstanceRecord> = inner
            .instances
            .values()
            .filter(|r| r.last_seen < before)
            .cloned()
            .collect();
        if !expired.is_empty() {
            inner.instances.retain(|_, r| r.last_seen >= before);
            inner.registry_version += 1;
        }
        Ok(expired)
    }

    async fn registry(&self) -> Result<(u64, Vec<InstanceRecord>), StoreError> {
        let inner = self.lock();
        Ok((
            inner.registry_version,
            inner.instances.values().cloned().collect(),
        ))
    }
}
