//! Receipts: how a broker that holds relayed messages in this process's memory tells the outbox
//! relay when each one was handled, so the relay marks its row sent only then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// What became of one relayed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The message's outbox row.
    pub id: i64,
    /// Every delivery was acknowledged (or there was none); `false`: one was dropped unhandled (its
    /// consumer failed or stopped), so the row is published again.
    pub handled: bool,
}

/// The relay's end: where receipts for the rows it publishes arrive.
#[derive(Clone, Debug)]
pub struct Receipts {
    sender: mpsc::UnboundedSender<Receipt>,
}

impl Receipts {
    /// A sink and the receiver its receipts arrive on.
    pub(crate) fn channel() -> (Self, mpsc::UnboundedReceiver<Receipt>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Receipts { sender }, receiver)
    }

    /// The tracker of row `id`: each delivery of its message holds a clone, and once the last one is
    /// gone the receipt is sent.
    pub fn track(&self, id: i64) -> Tracked {
        Tracked(Arc::new(Tracker {
            id,
            dropped: AtomicBool::new(false),
            sender: self.sender.clone(),
        }))
    }
}

/// Held by each delivery of one relayed message (cloned per delivery); see [`Receipts::track`].
#[derive(Clone, Debug)]
pub struct Tracked(Arc<Tracker>);

impl Tracked {
    /// Records that one delivery was dropped without being acknowledged.
    pub(crate) fn dropped_unhandled(&self) {
        self.0.dropped.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Tracker {
    id: i64,
    dropped: AtomicBool,
    sender: mpsc::UnboundedSender<Receipt>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.sender.send(Receipt {
            id: self.id,
            handled: !self.dropped.load(Ordering::Relaxed),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receipt_comes_once_every_delivery_is_done() {
        let (receipts, mut received) = Receipts::channel();
        let tracked = receipts.track(7);
        let copy = tracked.clone();
        drop(tracked);
        assert!(received.try_recv().is_err(), "one delivery still holds it");
        drop(copy);
        assert_eq!(
            received.try_recv().unwrap(),
            Receipt {
                id: 7,
                handled: true
            }
        );
        let tracked = receipts.track(8);
        tracked.clone().dropped_unhandled();
        drop(tracked);
        assert_eq!(
            received.try_recv().unwrap(),
            Receipt {
                id: 8,
                handled: false
            }
        );
    }
}
