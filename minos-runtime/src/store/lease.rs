//! [`RelayLease`]: permission to relay a store's outbox, and what the relay knows from it.

use std::fmt;

/// What keeps a lease: dropped with it. A database lock tells whether it still holds.
pub(crate) trait Guard: Send + Sync {
    /// Whether the guard still holds (false once a lock died with its connection).
    fn is_held(&self) -> bool {
        true
    }
}

/// Any value, held only to be dropped with the lease.
struct Held<T>(#[allow(dead_code)] T);

impl<T: Send + Sync> Guard for Held<T> {}

/// Permission to relay a store's outbox, released when dropped.
pub struct RelayLease {
    guard: Option<Box<dyn Guard>>,
    horizon: Option<i64>,
}

impl fmt::Debug for RelayLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayLease")
            .field("horizon", &self.horizon)
            .finish()
    }
}

impl RelayLease {
    /// A lease that nothing else can hold.
    pub fn unconditional() -> Self {
        RelayLease {
            guard: None,
            horizon: None,
        }
    }

    /// A lease that lasts as long as `held` (e.g. a database lock's guard).
    pub fn holding(held: impl Send + Sync + 'static) -> Self {
        Self::guarded(Held(held))
    }

    /// A lease kept by `guard`, which also tells whether it still holds.
    pub(crate) fn guarded(guard: impl Guard + 'static) -> Self {
        RelayLease {
            guard: Some(Box::new(guard)),
            horizon: None,
        }
    }

    /// Whether the lease still holds: false once the lock it stands for died with its connection
    /// (another relay may hold it by now). The relay asks again for a lease then.
    pub fn is_held(&self) -> bool {
        self.guard.as_ref().is_none_or(|guard| guard.is_held())
    }

    /// This lease, knowing that every outbox row committed before it was granted has an id no greater
    /// than `last_id` (read once the lease was held). Only for an exclusive lease (one relay per
    /// outbox): rows with greater ids were written after it, so no other relay can have published
    /// them, and the relay marks their deliveries as first ones (see
    /// [`crate::messaging::Broker::publish_relayed`]). Without it every row may have been published
    /// before.
    pub fn after(mut self, last_id: i64) -> Self {
        self.horizon = Some(last_id);
        self
    }

    /// The id past which rows were never published: the one given to [`after`](Self::after), moved
    /// past each page the relay published under this lease (a row read again, its mark lost to a
    /// database crash, is no first delivery). `None` when unknown.
    pub fn horizon(&self) -> Option<i64> {
        self.horizon
    }

    /// Notes that the rows up to `id` were published under this lease.
    pub(crate) fn published_up_to(&mut self, id: i64) {
        if let Some(horizon) = self.horizon.as_mut() {
            *horizon = (*horizon).max(id);
        }
    }
}
