//! The consumer loop of a subscription: messages handed over as deliveries, offsets committed only past
//! handled ones, undecodable messages parked as dead letters.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::producer::DeadLetters;
use crate::messaging::{BrokerMessage, Delivery};

/// Offsets handed out but not yet handled, per partition; commits move only past handled ones.
#[derive(Default)]
struct Offsets {
    pending: HashMap<(String, i32), BTreeMap<i64, bool>>,
}

impl Offsets {
    fn received(&mut self, topic: &str, partition: i32, offset: i64) {
        self.pending
            .entry((topic.to_owned(), partition))
            .or_default()
            .insert(offset, false);
    }

    /// Marks an offset handled; returns the offset to commit (one past the last contiguous handled one).
    fn handled(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let offsets = self.pending.get_mut(&(topic.to_owned(), partition))?;
        if let Some(done) = offsets.get_mut(&offset) {
            *done = true;
        }
        let mut commit = None;
        while let Some((&first, &done)) = offsets.iter().next() {
            if !done {
                break;
            }
            offsets.remove(&first);
            commit = Some(first + 1);
        }
        commit
    }
}

/// How long handled offsets may wait to be committed together. A crash in between only means those
/// messages are delivered again, and the inbox skips them.
const COMMIT_EVERY: Duration = Duration::from_millis(20);

/// Commits `ready` (the next offset of each partition) and empties it.
fn commit_ready(
    consumer: &StreamConsumer,
    ready: &mut HashMap<(String, i32), i64>,
    mode: CommitMode,
) {
    if ready.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), next) in ready.drain() {
        if let Err(error) = list.add_partition_offset(&topic, partition, Offset::Offset(next)) {
            tracing::warn!(%error, %topic, partition, "offset not committed; the messages may be delivered again");
        }
    }
    if let Err(error) = consumer.commit(&list, mode) {
        tracing::warn!(%error, "offset commit failed; the messages may be delivered again");
    }
}

pub(super) async fn consume(
    consumer: StreamConsumer,
    sender: mpsc::UnboundedSender<Delivery>,
    dead_letters: DeadLetters,
) {
    let (acks, mut acked) = mpsc::unbounded_channel::<(String, i32, i64)>();
    let mut offsets = Offsets::default();
    // Handled offsets not committed yet: one commit request for all of them every `COMMIT_EVERY` at
    // most, instead of one per message.
    let mut ready: HashMap<(String, i32), i64> = HashMap::new();
    let flush = tokio::time::sleep(COMMIT_EVERY);
    tokio::pin!(flush);
    loop {
        tokio::select! {
            received = consumer.recv() => {
                let message = match received {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(%error, "kafka consumer error; continuing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let (topic, partition, offset) = (message.topic().to_owned(), message.partition(), message.offset());
                offsets.received(&topic, partition, offset);
                let raw = message.payload().unwrap_or_default();
                match BrokerMessage::from_json(raw) {
                    Ok(mut decoded) => {
                        decoded.key = message.key().map(|k| String::from_utf8_lossy(k).into_owned());
                        let acks = acks.clone();
                        let ack_topic = topic.clone();
                        let ack = Box::new(move || {
                            let _ = acks.send((ack_topic, partition, offset));
                        });
                        if sender.send(Delivery::new(decoded, Some(ack))).is_err() {
                            commit_ready(&consumer, &mut ready, CommitMode::Sync);
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, %topic, partition, offset, "undecodable message; parking it on {}", dead_letters.topic);
                        match dead_letters.park_raw(&topic, raw, &error).await {
                            Ok(()) => {
                                let _ = acks.send((topic, partition, offset));
                            }
                            Err(park_error) => tracing::error!(error = %park_error, "could not park an undecodable message; it will be delivered again"),
                        }
                    }
                }
            }
            Some((topic, partition, offset)) = acked.recv() => {
                if let Some(next) = offsets.handled(&topic, partition, offset) {
                    if ready.is_empty() {
                        flush.as_mut().reset(tokio::time::Instant::now() + COMMIT_EVERY);
                    }
                    ready.insert((topic, partition), next);
                }
            }
            () = &mut flush, if !ready.is_empty() => {
                commit_ready(&consumer, &mut ready, CommitMode::Async);
            }
            // The subscription was dropped: commit what was handled and leave the group now, so its
            // partitions move at once.
            _ = sender.closed() => {
                while let Ok((topic, partition, offset)) = acked.try_recv() {
                    if let Some(next) = offsets.handled(&topic, partition, offset) {
                        ready.insert((topic, partition), next);
                    }
                }
                commit_ready(&consumer, &mut ready, CommitMode::Sync);
                return;
            }
            else => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_move_only_past_contiguous_handled_offsets() {
        let mut offsets = Offsets::default();
        for o in 10..14 {
            offsets.received("t", 0, o);
        }
        assert_eq!(offsets.handled("t", 0, 11), None);
        assert_eq!(offsets.handled("t", 0, 10), Some(12));
        assert_eq!(offsets.handled("t", 0, 13), None);
        assert_eq!(offsets.handled("t", 0, 12), Some(14));
        assert_eq!(offsets.handled("t", 1, 5), None);
    }
}
