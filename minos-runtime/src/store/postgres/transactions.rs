//! [`TransactionStore`] for PostgreSQL: transaction entries, the writes each one holds, and the claims on
//! roots that keep two transactions of one destination apart.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::{DomainMessage, Event, TransactionEntry, TransactionStatus};
use crate::store::{
    needs_claims, ClaimedCommit, HeldWrites, InboxEntry, StoreError, StoredEvent, TransactionStore,
};

use super::outbox::fed_copy;
use super::writer::commit_written;
use super::{db_error, prepared, PostgresStore, BACKEND};

fn decode_transaction(row: &Row) -> Result<TransactionEntry, StoreError> {
    let status: String = row.get("status");
    Ok(TransactionEntry {
        uuid: row.get("uuid"),
        status: TransactionStatus::parse(&status).ok_or_else(|| {
            StoreError::backend(BACKEND, format!("unknown transaction status `{status}`"))
        })?,
        destination: row.get("destination"),
        updated_at: row.get("updated_at"),
    })
}

/// `$head` (which inserts `$1..$4` into `transactions`) as an upsert of the entry.
macro_rules! upsert_entry {
    ($head:literal) => {
        concat!(
            $head,
            " ON CONFLICT (uuid) DO UPDATE SET status = EXCLUDED.status, \
             destination = EXCLUDED.destination, updated_at = EXCLUDED.updated_at"
        )
    };
}

/// Saves a transaction entry.
const SAVE: &str = upsert_entry!(
    "INSERT INTO transactions (uuid, status, destination, updated_at) VALUES ($1, $2, $3, $4)"
);

/// Saves a transaction entry without waiting for the disk (`synchronous_commit` off for this
/// statement's own transaction only).
const MARK: &str = upsert_entry!(
    "INSERT INTO transactions (uuid, status, destination, updated_at) SELECT $1, $2, $3, $4 \
     FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed"
);

/// Saves a transaction entry and forgets the writes and claims it held, in one statement; answers
/// how many writes it forgot.
const SETTLE: &str = concat!(
    upsert_entry!(
        "WITH claims AS (DELETE FROM transaction_claims WHERE transaction_uuid = $1), \
         writes AS (DELETE FROM transaction_writes WHERE transaction_uuid = $1 RETURNING 1) \
         INSERT INTO transactions (uuid, status, destination, updated_at) VALUES ($1, $2, $3, $4)"
    ),
    " RETURNING (SELECT count(*) FROM writes)"
);

/// Claims the roots `$3` for transaction `$2` among the transactions of destination `$1`, in one
/// statement: a concurrent claimer of the same root waits for it, then sees the row. Each root answers
/// whether this call took it or the transaction held it already.
const CLAIM: &str = "WITH taken AS ( \
     INSERT INTO transaction_claims (destination, root, transaction_uuid) \
     SELECT $1, r, $2 FROM UNNEST($3::uuid[]) WITH ORDINALITY AS c(r, position) ORDER BY position \
     ON CONFLICT (destination, root) DO NOTHING RETURNING root) \
 SELECT r, r IN (SELECT root FROM taken) AS taken, EXISTS (SELECT 1 FROM transaction_claims k \
     WHERE k.destination = $1 AND k.root = r AND k.transaction_uuid = $2) AS held \
 FROM UNNEST($3::uuid[]) AS c(r)";

/// The first root of a [`CLAIM`] answer that another transaction holds.
fn unclaimed(rows: &[Row]) -> Option<Uuid> {
    rows.iter()
        .find(|r| !r.get::<_, bool>(1) && !r.get::<_, bool>(2))
        .map(|r| r.get::<_, Uuid>(0))
}

/// One held write from a row's `event` and `messages` columns.
fn decode_write(row: &Row) -> Result<(Event, Vec<DomainMessage>), StoreError> {
    let json = |e| StoreError::Domain(crate::domain::DomainError::Json(e));
    let event: Event = serde_json::from_value(row.get("event")).map_err(json)?;
    let messages: Vec<DomainMessage> = serde_json::from_value(row.get("messages")).map_err(json)?;
    Ok((event, messages))
}

/// Held writes as the `jsonb[]` columns of `transaction_writes`: events and their messages.
fn encode_writes(
    writes: &[(Event, Vec<DomainMessage>)],
) -> Result<(Vec<Value>, Vec<Value>), StoreError> {
    let json = |e| StoreError::Domain(crate::domain::DomainError::Json(e));
    let events = writes
        .iter()
        .map(|(e, _)| serde_json::to_value(e))
        .collect::<Result<_, _>>()
        .map_err(json)?;
    let messages = writes
        .iter()
        .map(|(_, m)| serde_json::to_value(m))
        .collect::<Result<_, _>>()
        .map_err(json)?;
    Ok((events, messages))
}

/// The inbox entry's columns (all null without one), as [`HOLD`] and [`OPEN_AND_HOLD`] take them.
fn inbox_columns(inbox: Option<&InboxEntry>) -> (Option<&str>, Option<Uuid>, Option<String>) {
    match inbox {
        Some(entry) => (
            Some(entry.consumer.as_str()),
            Some(entry.identifier),
            crate::store::stored_reply_text(entry),
        ),
        None => (None, None, None),
    }
}

/// The CTE `found` reading transaction `$1`'s status and locking its entry `FOR SHARE` until the
/// statement's transaction ends (see [`HOLD`]).
macro_rules! found_entry {
    () => {
        "found AS (SELECT status FROM transactions WHERE uuid = $1 FOR SHARE)"
    };
}

/// The CTE holding the writes `$2`, `$3` under transaction `$1`, in order, when `open` says it may
/// and the inbox entry (`$4`, none when null) was `recorded`.
macro_rules! held_writes {
    () => {
        "held AS ( \
         INSERT INTO transaction_writes (transaction_uuid, event, messages) \
         SELECT $1, e, m FROM UNNEST($2::jsonb[], $3::jsonb[]) WITH ORDINALITY AS w(e, m, position) \
         WHERE (SELECT ok FROM open) AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM recorded)) \
         ORDER BY position)"
    };
}

/// The answer column saying whether transaction `$1` held, before this statement, a write that
/// changes an existing root (a statement does not see its own inserts).
macro_rules! claims_before {
    () => {
        "EXISTS (SELECT 1 FROM transaction_writes \
         WHERE transaction_uuid = $1 AND event ->> 'action' <> 'create') AS claims"
    };
}

/// Holds the writes (`$2`, `$3`) under transaction `$1` when it is pending (`ok`), with the inbox
/// entry (`$4`..`$6`; none when `$4` is null), all or nothing: the writes only if the inbox row is
/// new, the inbox row only if the writes have a pending transaction to go under (or there are none).
/// The entry is locked (`FOR SHARE`) until the hold commits: anything that moves the entry on (a
/// reservation's mark, a commit or a reject, which lock it first) waits for the hold, then sees its
/// writes; a hold that comes after waits for the move, then finds the entry no longer pending. Holds
/// do not wait for each other. The statement's own inserts are not visible to its reads: `claims`
/// looks at the writes held before.
const HOLD: &str = concat!(
    "WITH ",
    found_entry!(),
    ", open AS (SELECT COALESCE((SELECT status = 'pending' FROM found), false) AS ok), \
     recorded AS ( \
         INSERT INTO inbox (consumer, identifier, reply) SELECT $4::text, $5::uuid, $6::text \
         WHERE $4::text IS NOT NULL AND (cardinality($2::jsonb[]) = 0 OR (SELECT ok FROM open)) \
         ON CONFLICT DO NOTHING RETURNING 1), ",
    held_writes!(),
    " SELECT (SELECT ok FROM open) AS ok, (SELECT status FROM found) AS status, \
     (SELECT count(*) FROM recorded) AS recorded, ",
    claims_before!()
);

/// Locks a transaction's entry against holds (which lock it `FOR SHARE`) for the rest of the
/// database transaction, answering its status: a statement after it sees every hold that got in
/// first, and later holds wait, then find the entry moved on.
const LOCK_ENTRY: &str = "SELECT status FROM transactions WHERE uuid = $1 FOR UPDATE";

/// The writes transaction `$1` holds, in the order they were held.
const HELD: &str =
    "SELECT event, messages FROM transaction_writes WHERE transaction_uuid = $1 ORDER BY id";

/// An entry's columns, its status as `status` names it, as `$1..$4` of the entry statements
/// ([`SAVE`], [`MARK`], [`SETTLE`]).
fn entry_params<'a>(
    entry: &'a TransactionEntry,
    status: &'a &'static str,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 4] {
    [&entry.uuid, status, &entry.destination, &entry.updated_at]
}

/// Why writes were not held under `transaction`, whose status was `status` (`None`: no entry).
fn refused(transaction: Uuid, status: Option<String>) -> StoreError {
    let Some(status) = status else {
        return StoreError::UnknownTransaction { transaction };
    };
    match TransactionStatus::parse(&status) {
        Some(status) => StoreError::TransactionClosed {
            transaction,
            status,
        },
        None => StoreError::backend(BACKEND, format!("unknown transaction status `{status}`")),
    }
}

/// Opens the entries of a chain (`$7` uuids, `$8` destinations, pending at `$9`) the store does not
/// know yet and, when the last (`$1`) is pending, holds the writes (`$2`, `$3`) under it with the
/// inbox entry (`$4`..`$6`; none when `$4` is null), all in one statement: the entries reach the disk
/// with the writes. An entry found is locked as [`HOLD`] locks it. Answers whether the last is pending
/// (`ok`), its status before (`status`), whether this statement opened it, whether the inbox entry is
/// new, and whether writes held before change existing roots.
const OPEN_AND_HOLD: &str = concat!(
    "WITH opened AS ( \
         INSERT INTO transactions (uuid, status, destination, updated_at) \
         SELECT c.uuid, 'pending', c.destination, $9 \
         FROM UNNEST($7::uuid[], $8::uuid[]) WITH ORDINALITY AS c(uuid, destination, position) \
         ORDER BY position ON CONFLICT (uuid) DO NOTHING RETURNING uuid), ",
    found_entry!(),
    ", open AS (SELECT EXISTS (SELECT 1 FROM opened WHERE uuid = $1) \
         OR COALESCE((SELECT status = 'pending' FROM found), false) AS ok), \
     recorded AS ( \
         INSERT INTO inbox (consumer, identifier, reply) SELECT $4::text, $5::uuid, $6::text \
         WHERE $4::text IS NOT NULL AND (SELECT ok FROM open) \
         ON CONFLICT DO NOTHING RETURNING 1), ",
    held_writes!(),
    " SELECT (SELECT ok FROM open) AS ok, (SELECT status FROM found) AS status, \
     EXISTS (SELECT 1 FROM opened WHERE uuid = $1) AS opened, \
     (SELECT count(*) FROM recorded) AS recorded, ",
    claims_before!()
);

impl PostgresStore {
    /// Commits a top-level transaction in one database transaction: claims `roots` (none: nothing to
    /// claim), stores `held` as one unit, saves `entry` and forgets its writes and claims. The entry is
    /// locked first: a write held since `held` was read, or an entry no longer pending or reserved
    /// (another process ended it), rolls everything back as [`StoreError::TransactionChanged`].
    async fn commit_in_one(
        &self,
        entry: &TransactionEntry,
        held: &HeldWrites,
        roots: &[Uuid],
    ) -> Result<ClaimedCommit, StoreError> {
        let mut roots = roots.to_vec();
        roots.sort();
        roots.dedup();
        let mut client = self.client().await?;
        // Dropping `tx` on an early return rolls everything back.
        let tx = client.transaction().await.map_err(db_error)?;
        let items: Vec<(&Event, &[DomainMessage])> =
            held.iter().map(|(e, m)| (e, m.as_slice())).collect();
        let lock = prepared(&tx, LOCK_ENTRY).await?;
        let settle = prepared(&tx, SETTLE).await?;
        let claim = match roots.is_empty() {
            true => None,
            false => Some(prepared(&tx, CLAIM).await?),
        };
        let top = Uuid::nil();
        let status = entry.status.as_str();
        let params = entry_params(entry, &status);
        let ticket = self.outbox_ticket(held);
        // All go out at once (pipelined on the connection, in this order: the entry is locked before
        // the settle counts the held writes it forgets, the claim taken before the versions are read);
        // the commit makes them one. A concurrent claimer of the same roots waits for this transaction
        // to end, then finds the claims gone and the new versions.
        let (locked, claimed, stored, settled) = tokio::join!(
            tx.query_opt(&lock, &params[..1]),
            async {
                match &claim {
                    None => Ok(Vec::new()),
                    Some(claim) => tx.query(claim, &[&top, &entry.uuid, &roots]).await,
                }
            },
            async {
                match items.is_empty() {
                    true => Ok(None),
                    false => commit_written(&tx, &items).await.map(Some),
                }
            },
            tx.query_one(&settle, &params)
        );
        let status: Option<String> = locked.map_err(db_error)?.map(|row| row.get(0));
        let changed = || {
            Err(StoreError::TransactionChanged {
                transaction: entry.uuid,
            })
        };
        if !matches!(status.as_deref(), Some("pending" | "reserved")) {
            return changed();
        }
        if let Some(root) = unclaimed(&claimed.map_err(db_error)?) {
            drop(tx);
            let holder = client
                .query_opt(
                    &prepared(
                        &client,
                        "SELECT transaction_uuid FROM transaction_claims WHERE destination = $1 AND root = $2",
                    )
                    .await?,
                    &[&top, &root],
                )
                .await
                .map_err(db_error)?
                .map(|row| row.get(0));
            return Ok(ClaimedCommit::Held { root, holder });
        }
        let forgotten: i64 = settled.map_err(db_error)?.get(0);
        if usize::try_from(forgotten).ok() != Some(held.len()) {
            return changed();
        }
        let (fed, stored) = match stored? {
            Some(written) => (fed_copy(ticket.as_ref(), held, &written), written.results),
            None => (None, Vec::new()),
        };
        let stored = stored.into_iter().collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(db_error)?;
        if let (Some(ticket), Some(rows)) = (ticket, fed) {
            ticket.complete(rows);
        }
        Ok(ClaimedCommit::Committed(stored))
    }

    /// Adds `writes` to those `transaction` holds, with the inbox entry when given (all or nothing),
    /// in one statement; also answers whether the transaction held a write before these that changes
    /// a root that existed before.
    async fn hold_writes(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<bool, StoreError> {
        let (events, messages) = encode_writes(writes)?;
        self.inbox.deferred.refuse_held(inbox)?;
        let (consumer, identifier, reply) = inbox_columns(inbox);
        let client = self.client().await?;
        let row = client
            .query_one(
                &prepared(&client, HOLD).await?,
                &[
                    &transaction,
                    &events,
                    &messages,
                    &consumer,
                    &identifier,
                    &reply,
                ],
            )
            .await
            .map_err(db_error)?;
        if !writes.is_empty() && !row.get::<_, bool>("ok") {
            return Err(refused(transaction, row.get("status")));
        }
        if let Some(entry) = inbox {
            if row.get::<_, i64>("recorded") == 0 {
                return Err(StoreError::AlreadyProcessed {
                    consumer: entry.consumer.clone(),
                    identifier: entry.identifier,
                });
            }
        }
        Ok(row.get("claims"))
    }

    /// Runs `sql`, one of the entry statements above, with the entry's columns as `$1..$4`.
    async fn write_entry(&self, sql: &str, entry: &TransactionEntry) -> Result<(), StoreError> {
        let client = self.client().await?;
        let status = entry.status.as_str();
        client
            .execute(
                &prepared(&client, sql).await?,
                &entry_params(entry, &status),
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

#[async_trait]
impl TransactionStore for PostgresStore {
    async fn save_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        self.write_entry(SAVE, entry).await
    }

    async fn transaction(&self, uuid: Uuid) -> Result<Option<TransactionEntry>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &prepared(&client, "SELECT uuid, status, destination, updated_at FROM transactions WHERE uuid = $1").await?,
                &[&uuid],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(decode_transaction).transpose()
    }

    async fn transactions_in(
        &self,
        statuses: &[TransactionStatus],
        before: DateTime<Utc>,
    ) -> Result<Vec<TransactionEntry>, StoreError> {
        let client = self.client().await?;
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let rows = client
            .query(
                &prepared(
                    &client,
                    "SELECT uuid, status, destination, updated_at FROM transactions \
                 WHERE status = ANY($1) AND updated_at < $2 ORDER BY updated_at, uuid",
                )
                .await?,
                &[&statuses, &before],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_transaction).collect()
    }

    async fn hold(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<(), StoreError> {
        if writes.is_empty() && inbox.is_none() {
            return Ok(());
        }
        self.hold_writes(transaction, writes, inbox)
            .await
            .map(|_| ())
    }

    async fn hold_and_check_claims(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<bool, StoreError> {
        let claims_before = self.hold_writes(transaction, writes, inbox).await?;
        Ok(claims_before || needs_claims(writes))
    }

    async fn open_and_hold(
        &self,
        chain: &[TransactionEntry],
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
        check_claims: bool,
    ) -> Result<bool, StoreError> {
        let Some(last) = chain.last() else {
            return Err(StoreError::backend(
                BACKEND,
                "no transaction to hold writes under",
            ));
        };
        let (events, messages) = encode_writes(writes)?;
        let uuids: Vec<Uuid> = chain.iter().map(|e| e.uuid).collect();
        let destinations: Vec<Option<Uuid>> = chain.iter().map(|e| e.destination).collect();
        self.inbox.deferred.refuse_held(inbox)?;
        let (consumer, identifier, reply) = inbox_columns(inbox);
        let client = self.client().await?;
        let statement = prepared(&client, OPEN_AND_HOLD).await?;
        // A concurrent first hold of the same transaction can open the entry after this statement's
        // snapshot: it then finds the entry neither opened by itself nor visible, and runs again.
        for _ in 0..2 {
            let row = client
                .query_one(
                    &statement,
                    &[
                        &last.uuid,
                        &events,
                        &messages,
                        &consumer,
                        &identifier,
                        &reply,
                        &uuids,
                        &destinations,
                        &last.updated_at,
                    ],
                )
                .await
                .map_err(db_error)?;
            if !row.get::<_, bool>("ok") {
                match row.get::<_, Option<String>>("status") {
                    None if !row.get::<_, bool>("opened") => continue,
                    status => return Err(refused(last.uuid, status)),
                }
            }
            if let Some(entry) = inbox {
                if row.get::<_, i64>("recorded") == 0 {
                    return Err(StoreError::AlreadyProcessed {
                        consumer: entry.consumer.clone(),
                        identifier: entry.identifier,
                    });
                }
            }
            return Ok(check_claims && (row.get::<_, bool>("claims") || needs_claims(writes)));
        }
        Err(StoreError::UnknownTransaction {
            transaction: last.uuid,
        })
    }

    async fn held(&self, transaction: Uuid) -> Result<HeldWrites, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(&prepared(&client, HELD).await?, &[&transaction])
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_write).collect()
    }

    async fn release(&self, transaction: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &prepared(
                    &client,
                    "WITH claims AS (DELETE FROM transaction_claims WHERE transaction_uuid = $1) \
                 DELETE FROM transaction_writes WHERE transaction_uuid = $1",
                )
                .await?,
                &[&transaction],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn claim(
        &self,
        destination: Option<Uuid>,
        transaction: Uuid,
        roots: &[Uuid],
    ) -> Result<Option<(Uuid, Uuid)>, StoreError> {
        let destination = destination.unwrap_or(Uuid::nil());
        let mut roots = roots.to_vec();
        // One order for every claimer: two claims never wait on each other in a cycle.
        roots.sort();
        roots.dedup();
        // A holder that lets go between the claim and the look-up: claim again (a few times).
        for _ in 0..3 {
            let client = self.client().await?;
            let rows = client
                .query(
                    &prepared(&client, CLAIM).await?,
                    &[&destination, &transaction, &roots],
                )
                .await
                .map_err(db_error)?;
            let taken: Vec<Uuid> = rows
                .iter()
                .filter(|r| r.get::<_, bool>(1))
                .map(|r| r.get(0))
                .collect();
            let Some(missing) = unclaimed(&rows) else {
                return Ok(None);
            };
            // All or none: give back what this call took, then name the holder.
            let holder = client
                .query_opt(
                    &prepared(&client, "WITH given_back AS ( \
                         DELETE FROM transaction_claims WHERE destination = $1 AND transaction_uuid = $2 AND root = ANY($3)) \
                     SELECT transaction_uuid FROM transaction_claims WHERE destination = $1 AND root = $4").await?,
                    &[&destination, &transaction, &taken, &missing],
                )
                .await
                .map_err(db_error)?;
            if let Some(holder) = holder {
                return Ok(Some((missing, holder.get(0))));
            }
        }
        Err(StoreError::backend(
            BACKEND,
            "claims kept changing hands: gave up after 3 attempts",
        ))
    }

    async fn commit_transaction(
        &self,
        entry: &TransactionEntry,
        held: &HeldWrites,
    ) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        match self.commit_in_one(entry, held, &[]).await? {
            ClaimedCommit::Committed(stored) => Ok(Some(stored)),
            _ => Ok(None),
        }
    }

    async fn claim_and_commit(
        &self,
        entry: &TransactionEntry,
        held: &HeldWrites,
        roots: &[Uuid],
    ) -> Result<ClaimedCommit, StoreError> {
        self.commit_in_one(entry, held, roots).await
    }

    async fn mark_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        self.write_entry(MARK, entry).await
    }

    async fn open_transaction(
        &self,
        entry: &TransactionEntry,
    ) -> Result<Option<TransactionEntry>, StoreError> {
        // (The runtime opens entries with their first hold, `open_and_hold`.)
        let client = self.client().await?;
        let status = entry.status.as_str();
        let row = client
            .query_opt(
                &prepared(&client, "WITH opened AS ( \
                     INSERT INTO transactions (uuid, status, destination, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (uuid) DO NOTHING RETURNING uuid) \
                 SELECT uuid, status, destination, updated_at FROM transactions \
                 WHERE uuid = $1 AND NOT EXISTS (SELECT 1 FROM opened)").await?,
                &entry_params(entry, &status),
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(decode_transaction).transpose()
    }

    async fn transaction_and_held(
        &self,
        uuid: Uuid,
    ) -> Result<Option<(TransactionEntry, HeldWrites)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &prepared(
                    &client,
                    "SELECT t.uuid, t.status, t.destination, t.updated_at, w.event, w.messages \
                 FROM transactions t LEFT JOIN transaction_writes w ON w.transaction_uuid = t.uuid \
                 WHERE t.uuid = $1 ORDER BY w.id",
                )
                .await?,
                &[&uuid],
            )
            .await
            .map_err(db_error)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let entry = decode_transaction(first)?;
        let held = rows
            .iter()
            .filter(|row| row.get::<_, Option<Value>>("event").is_some())
            .map(decode_write)
            .collect::<Result<_, _>>()?;
        Ok(Some((entry, held)))
    }

    async fn settle_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        if entry.status != TransactionStatus::Rejected {
            // Committed: the entry left pending before, no hold can be in flight.
            return self.write_entry(SETTLE, entry).await;
        }
        // A reject can end a pending transaction while a write is being held under it. The settle
        // reads the held writes as they were when it started, so the entry is locked first, in a
        // statement of its own: holds in flight are waited for, and their writes forgotten too.
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let (lock, settle) = (
            prepared(&tx, LOCK_ENTRY).await?,
            prepared(&tx, SETTLE).await?,
        );
        let status = entry.status.as_str();
        let params = entry_params(entry, &status);
        let (locked, settled) = tokio::join!(
            tx.query_opt(&lock, &params[..1]),
            tx.query_one(&settle, &params)
        );
        locked.map_err(db_error)?;
        settled.map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn close_transaction(&self, entry: &TransactionEntry) -> Result<HeldWrites, StoreError> {
        let client = self.client().await?;
        let (mark, held) = (
            prepared(&client, MARK).await?,
            prepared(&client, HELD).await?,
        );
        // Pipelined, each its own database transaction: the mark waits for holds in flight (their
        // lock), and the read, which starts once the mark is committed, sees their writes.
        let status = entry.status.as_str();
        let params = entry_params(entry, &status);
        let (marked, rows) = tokio::join!(
            client.execute(&mark, &params),
            client.query(&held, &params[..1])
        );
        marked.map_err(db_error)?;
        rows.map_err(db_error)?.iter().map(decode_write).collect()
    }
}
