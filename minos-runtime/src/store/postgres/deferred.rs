//! The inbox entries of handlers that wrote nothing and owe no reply (an event's handlers): held in
//! memory and recorded together [`DEFER`] after the first of them, in one statement for a few dozen
//! instead of one for every two. Held, they answer the inbox's look-ups like recorded ones; recorded,
//! they are remembered [`REMEMBER`] longer, so a copy of the message that arrives meanwhile is still
//! refused without a statement.
//!
//! What they risk is what committing them without waiting for the WAL flush already risked: a process
//! crash, or a database crash, loses only entries whose handlers wrote nothing, and a message delivered
//! again after that is handled again (at-least-once). A service that stops records them first
//! ([`crate::store::InboxStore::settle`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::store::{InboxEntry, StoreError};

use super::inbox::{insert, MAX_BATCH};

/// How long an entry waits for others to be recorded with.
pub(super) const DEFER: Duration = Duration::from_millis(10);

/// How long a recorded entry is still refused from memory.
const REMEMBER: Duration = Duration::from_secs(1);

/// How long after a failed statement the entries it held are tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Most entries held while the database refuses them; a failed statement's entries beyond that are
/// given up (their messages, delivered again, are handled again: at-least-once).
const HELD_MAX: usize = 100_000;

type Key = (String, Uuid);

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Recording,
    Recorded,
}

/// See the module's documentation.
#[derive(Clone)]
pub(crate) struct Deferred {
    shared: Arc<Shared>,
    /// Wakes the task (one wake-up waits at most: the task records everything held when it runs).
    wake: mpsc::Sender<()>,
}

struct Shared {
    entries: Mutex<Entries>,
    pool: Arc<Pool>,
}

#[derive(Default)]
struct Entries {
    /// Every entry held, and every entry recorded within [`REMEMBER`].
    keys: HashMap<Key, State>,
    /// The entries not recorded yet (waiting or being recorded).
    unrecorded: usize,
    /// The entries recorded, a statement's at a time, oldest first: forgotten after [`REMEMBER`].
    recorded: VecDeque<(Instant, Vec<Key>)>,
}

impl Deferred {
    /// Starts the task that records the entries; it ends, after recording what is held, when the
    /// store's last clone is dropped.
    pub(super) fn spawn(pool: Arc<Pool>) -> Self {
        let shared = Arc::new(Shared {
            entries: Mutex::new(Entries::default()),
            pool,
        });
        let (wake, mut woken) = mpsc::channel::<()>(1);
        let task = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                // Idle, what was recorded is forgotten once it is old enough.
                let forgetting = !task.lock().recorded.is_empty();
                let wake = match forgetting {
                    true => tokio::time::timeout(REMEMBER, woken.recv()).await.ok(),
                    false => Some(woken.recv().await),
                };
                match wake {
                    None => {
                        task.lock().forget(Instant::now());
                        continue;
                    }
                    Some(None) => break,
                    Some(Some(())) => {}
                }
                tokio::time::sleep(DEFER).await;
                while task.record().await.is_err() {
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        woken = woken.recv() => if woken.is_none() { break },
                    }
                }
            }
            let _ = task.record().await;
        });
        Deferred { shared, wake }
    }

    /// Holds `entry` to be recorded with the others; [`StoreError::AlreadyProcessed`] when it is held
    /// or was recorded within [`REMEMBER`] (a copy of a message handled a moment ago).
    pub(crate) fn hold(&self, entry: &InboxEntry) -> Result<(), StoreError> {
        {
            let mut entries = self.shared.lock();
            let key = (entry.consumer.clone(), entry.identifier);
            if entries.keys.contains_key(&key) {
                return Err(StoreError::AlreadyProcessed {
                    consumer: entry.consumer.clone(),
                    identifier: entry.identifier,
                });
            }
            entries.keys.insert(key, State::Waiting);
            entries.unrecorded += 1;
        }
        // Full: a wake-up is waiting already.
        let _ = self.wake.try_send(());
        Ok(())
    }

    /// Whether the entry is held, or was recorded within [`REMEMBER`] (either way: in the inbox).
    pub(crate) fn holds(&self, key: &Key) -> bool {
        self.shared.lock().keys.contains_key(key)
    }

    /// Forgets the entries recorded (the database answers for them): after the inbox was purged.
    pub(crate) fn forget_recorded(&self) {
        let mut entries = self.shared.lock();
        let recorded = std::mem::take(&mut entries.recorded);
        for (_, keys) in recorded {
            for key in keys {
                entries.keys.remove(&key);
            }
        }
    }

    /// Records now what is held, and waits for the statement the task may be running: when it answers
    /// `Ok`, every entry held before the call is in the inbox.
    pub(crate) async fn settle(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.shared.record().await?;
            if self.shared.lock().unrecorded == 0 || Instant::now() >= deadline {
                return Ok(());
            }
            // Being recorded by the task: its statement ends soon.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the entries waiting, [`MAX_BATCH`] per statement, and forgets those recorded more
    /// than [`REMEMBER`] ago. A failed statement puts its entries (and those after it) back to wait,
    /// or gives them up beyond [`HELD_MAX`].
    async fn record(&self) -> Result<(), StoreError> {
        let batch: Vec<Key> = {
            let mut entries = self.lock();
            entries.forget(Instant::now());
            entries
                .keys
                .iter_mut()
                .filter(|(_, state)| **state == State::Waiting)
                .map(|(key, state)| {
                    *state = State::Recording;
                    key.clone()
                })
                .collect()
        };
        for (n, chunk) in batch.chunks(MAX_BATCH).enumerate() {
            let (consumers, identifiers): (Vec<&str>, Vec<Uuid>) =
                chunk.iter().map(|(c, i)| (c.as_str(), *i)).unzip();
            let replies: Vec<Option<&str>> = vec![None; chunk.len()];
            let result = insert(&self.pool, &consumers, &identifiers, &replies).await;
            let mut entries = self.lock();
            if let Err(error) = result {
                let rest = &batch[n * MAX_BATCH..];
                let give_up = entries.keys.len() > HELD_MAX;
                for key in rest {
                    match give_up {
                        true => {
                            entries.keys.remove(key);
                            entries.unrecorded -= 1;
                        }
                        false => {
                            entries.keys.insert(key.clone(), State::Waiting);
                        }
                    }
                }
                match give_up {
                    true => {
                        tracing::warn!(%error, entries = rest.len(), "could not record the inbox entries of handlers that wrote nothing: given up (their messages, if delivered again, are handled again)")
                    }
                    false => {
                        tracing::warn!(%error, entries = rest.len(), "could not record the inbox entries of handlers that wrote nothing: trying again")
                    }
                }
                return Err(error);
            }
            for key in chunk {
                entries.keys.insert(key.clone(), State::Recorded);
            }
            entries.unrecorded -= chunk.len();
            entries.recorded.push_back((Instant::now(), chunk.to_vec()));
        }
        Ok(())
    }
}

impl Entries {
    /// Forgets the entries recorded more than [`REMEMBER`] before `now`.
    fn forget(&mut self, now: Instant) {
        while let Some((at, _)) = self.recorded.front() {
            if now.duration_since(*at) < REMEMBER {
                break;
            }
            if let Some((_, keys)) = self.recorded.pop_front() {
                for key in keys {
                    self.keys.remove(&key);
                }
            }
        }
    }
}
