//! The inbox entries of handlers that wrote nothing and owe no reply (an event's handlers, a parked
//! message, a command sent without a reply topic): held in memory and recorded together [`DEFER`]
//! after the first of them, one statement for up to [`MAX_BATCH`] instead of one for every two. Held,
//! they answer the inbox's look-ups like recorded ones, and a unit of work carrying one is refused
//! ([`StoreError::AlreadyProcessed`]); recorded, they are remembered [`REMEMBER`] longer, so a copy of
//! the message that arrives meanwhile is refused without a statement. A later copy is found by the
//! look-up every delivery after the first makes; a unit with nothing but such an entry is then
//! accepted, and its entry's insert finds the row and does nothing.
//!
//! What they risk is what committing them without waiting for the WAL flush already risked: a process
//! crash, or a database crash, loses entries whose handlers wrote nothing, and a message delivered
//! again after that is handled again (at-least-once). While the database is away they wait in memory
//! and are tried again every [`RETRY`]; past [`HELD_MAX`] a failed batch is given up, with a warning.
//! A service that stops records them first ([`crate::store::InboxStore::settle`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::store::{InboxEntry, StoreError};

use super::inbox::{insert, MAX_BATCH};
use super::BACKEND;

/// How long an entry waits for others to be recorded with.
const DEFER: Duration = Duration::from_millis(10);

/// How long a recorded entry is still refused from memory.
const REMEMBER: Duration = Duration::from_secs(1);

/// How long after a failed statement the entries it held are tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Most entries held while the database refuses them; a failed statement's entries beyond that are
/// given up (their messages, delivered again, are handled again: at-least-once).
const HELD_MAX: usize = 100_000;

/// How long [`Deferred::settle`] waits for the entries held before it to be recorded.
const SETTLE_WITHIN: Duration = Duration::from_secs(5);

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
    /// Every entry held, and every entry recorded within [`REMEMBER`], with the order it was held in.
    keys: HashMap<Key, (State, u64)>,
    /// The number the next entry held gets.
    next: u64,
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
            'woken: loop {
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
                    tokio::time::sleep(RETRY).await;
                    if let Err(mpsc::error::TryRecvError::Disconnected) = woken.try_recv() {
                        break 'woken;
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
                return Err(already(entry));
            }
            let n = entries.next;
            entries.next += 1;
            entries.keys.insert(key, (State::Waiting, n));
        }
        // Full: a wake-up is waiting already.
        let _ = self.wake.try_send(());
        Ok(())
    }

    /// Whether the entry is held, or was recorded within [`REMEMBER`] (either way: in the inbox).
    pub(crate) fn holds(&self, key: &Key) -> bool {
        self.shared.lock().keys.contains_key(key)
    }

    /// [`StoreError::AlreadyProcessed`] for a unit of work whose inbox entry is held: the unit's own
    /// statement could not see it.
    pub(crate) fn refuse_held(&self, inbox: Option<&InboxEntry>) -> Result<(), StoreError> {
        match inbox {
            Some(entry) if self.holds(&(entry.consumer.clone(), entry.identifier)) => {
                Err(already(entry))
            }
            _ => Ok(()),
        }
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

    /// Records now what is held, and waits for the statement the task may be running: answers `Ok`
    /// once every entry held before the call is in the inbox, an error when that took longer than
    /// [`SETTLE_WITHIN`] or the database refused them.
    pub(crate) async fn settle(&self) -> Result<(), StoreError> {
        let before = self.shared.lock().next;
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            self.shared.record().await?;
            let left = self
                .shared
                .lock()
                .keys
                .values()
                .filter(|(state, n)| *state != State::Recorded && *n < before)
                .count();
            if left == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StoreError::backend(
                    BACKEND,
                    format!(
                        "{left} inbox entries held back were not recorded within {SETTLE_WITHIN:?}"
                    ),
                ));
            }
            // Being recorded by the task: its statement ends soon.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn already(entry: &InboxEntry) -> StoreError {
    StoreError::AlreadyProcessed {
        consumer: entry.consumer.clone(),
        identifier: entry.identifier,
    }
}

/// Puts the entries of a [`Shared::record`] that did not finish back to wait: a caller cancelled
/// while its statement ran (a stopping service, an aborted purge) leaves nothing stuck as recording.
struct Unfinished<'a> {
    shared: &'a Shared,
    keys: Vec<Key>,
    /// How many of `keys` are recorded or put back already.
    done: usize,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.done >= self.keys.len() {
            return;
        }
        let mut entries = self.shared.lock();
        for key in &self.keys[self.done..] {
            if let Some((state, _)) = entries.keys.get_mut(key) {
                *state = State::Waiting;
            }
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
        let keys: Vec<Key> = {
            let mut entries = self.lock();
            entries.forget(Instant::now());
            entries
                .keys
                .iter_mut()
                .filter(|(_, (state, _))| *state == State::Waiting)
                .map(|(key, (state, _))| {
                    *state = State::Recording;
                    key.clone()
                })
                .collect()
        };
        let mut batch = Unfinished {
            shared: self,
            keys,
            done: 0,
        };
        while batch.done < batch.keys.len() {
            let chunk = &batch.keys[batch.done..(batch.done + MAX_BATCH).min(batch.keys.len())];
            let (consumers, identifiers): (Vec<&str>, Vec<Uuid>) =
                chunk.iter().map(|(c, i)| (c.as_str(), *i)).unzip();
            let replies: Vec<Option<&str>> = vec![None; chunk.len()];
            let result = insert(&self.pool, &consumers, &identifiers, &replies).await;
            let mut entries = self.lock();
            if let Err(error) = result {
                let rest = &batch.keys[batch.done..];
                let give_up = entries.keys.len() > HELD_MAX;
                for key in rest {
                    if give_up {
                        entries.keys.remove(key);
                    } else if let Some((state, _)) = entries.keys.get_mut(key) {
                        *state = State::Waiting;
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
                batch.done = batch.keys.len();
                return Err(error);
            }
            for key in chunk {
                if let Some((state, _)) = entries.keys.get_mut(key) {
                    *state = State::Recorded;
                }
            }
            entries.recorded.push_back((Instant::now(), chunk.to_vec()));
            batch.done += chunk.len();
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
