//! The batch append writer: appends wait in a channel, a few writer tasks take what is waiting and
//! commit it in one atomic statement ([`commit_written`], also the path of `commit_unit`), and hand the
//! outbox rows it committed to the relay ([`CommitFeed`]).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::domain::{Action, DomainMessage, Event};
use crate::store::{check_applies, CommitFeed, Snapshot, StoreError, StoredEvent};

use super::outbox::fed_rows;
use super::snapshots::{decode_snapshot, SNAPSHOT_COLUMNS};
use super::{db_error, pool_error, prepared, PostgresOptions, BACKEND};

/// One append waiting for a writer, with where to send its answer.
pub(super) struct AppendRequest {
    pub(super) event: Event,
    pub(super) messages: Vec<DomainMessage>,
    pub(super) reply: oneshot::Sender<Result<StoredEvent, StoreError>>,
}

/// Starts `options.writers` writer tasks sharing `receiver`.
pub(super) fn spawn(
    pool: &Pool,
    receiver: mpsc::UnboundedReceiver<AppendRequest>,
    feed: &Arc<CommitFeed>,
    options: &PostgresOptions,
) {
    let receiver = Arc::new(Mutex::new(receiver));
    for _ in 0..options.writers.max(1) {
        tokio::spawn(writer(
            pool.clone(),
            Arc::clone(&receiver),
            Arc::clone(feed),
            options.max_batch.max(1),
        ));
    }
}

async fn writer(
    pool: Pool,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<AppendRequest>>>,
    feed: Arc<CommitFeed>,
    max_batch: usize,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(request) => batch.push(request),
                None => return,
            }
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
        }
        run_batch(&pool, &feed, batch).await;
    }
}

async fn run_batch(pool: &Pool, feed: &CommitFeed, mut batch: Vec<AppendRequest>) {
    // Taken before the statement goes out, completed with what it committed (the relay's feed).
    let ticket = feed.ticket();
    let items: Vec<(&Event, &[DomainMessage])> = batch
        .iter()
        .map(|r| (&r.event, r.messages.as_slice()))
        .collect();
    let outcome = commit(pool, &items).await;
    drop(items);
    match outcome {
        Ok(written) => {
            let appends = batch
                .iter_mut()
                .map(|r| (r.event.created_at, std::mem::take(&mut r.messages)));
            match fed_rows(appends, &written) {
                Some(rows) => ticket.complete(rows),
                None => drop(ticket),
            }
            for (request, result) in batch.into_iter().zip(written.results) {
                let _ = request.reply.send(result);
            }
        }
        // One append of a larger batch failed in the database (e.g. another process wrote the same
        // version first): commit each on its own, so only that one fails.
        Err(error) if batch.len() > 1 && !matches!(error, StoreError::Unavailable { .. }) => {
            // Under the batch's ticket: completed with what they committed, or dropped (after the
            // commits, so that the relay's read finds them) when one's outcome is unknown.
            let mut rows = Some(Vec::new());
            let mut answers = Vec::with_capacity(batch.len());
            for request in &mut batch {
                let items = [(&request.event, request.messages.as_slice())];
                answers.push(match commit(pool, &items).await {
                    Ok(mut written) => {
                        let messages = std::mem::take(&mut request.messages);
                        let appends = [(request.event.created_at, messages)];
                        match (fed_rows(appends, &written), rows.as_mut()) {
                            (Some(fed), Some(rows)) => rows.extend(fed),
                            _ => rows = None,
                        }
                        written.results.remove(0)
                    }
                    Err(error) => {
                        if matches!(error, StoreError::Unavailable { .. }) {
                            rows = None;
                        }
                        Err(error)
                    }
                });
            }
            match rows {
                Some(rows) => ticket.complete(rows),
                None => drop(ticket),
            }
            for (request, answer) in batch.into_iter().zip(answers) {
                let _ = request.reply.send(answer);
            }
        }
        Err(error) => {
            drop(ticket);
            let unavailable = matches!(error, StoreError::Unavailable { .. });
            let text = error.to_string();
            let mut first = Some(error);
            for request in batch {
                let error = first.take().unwrap_or_else(|| {
                    if unavailable {
                        StoreError::Unavailable {
                            backend: BACKEND,
                            source: text.clone().into(),
                        }
                    } else {
                        StoreError::backend(BACKEND, text.clone())
                    }
                });
                let _ = request.reply.send(Err(error));
            }
        }
    }
}

/// The one statement that commits a batch: snapshots are created (expected version 0) or updated only
/// where the stored version is still the expected one; events and outbox rows are written only for the
/// roots whose snapshot was written, each outbox row with its event's log position (header
/// `position`). A single statement is atomic, so no BEGIN/COMMIT round trips.
const COMMIT_SQL: &str = "\
WITH input AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::jsonb[], $5::timestamptz[], $6::timestamptz[], $7::int8[])
        AS t(uuid, name, version, data, created_at, updated_at, expected)
), created AS (
    INSERT INTO snapshots (uuid, name, version, data, created_at, updated_at)
    SELECT uuid, name, version, data, created_at, updated_at FROM input WHERE expected = 0
    ON CONFLICT (uuid) DO NOTHING
    RETURNING uuid
), updated AS (
    UPDATE snapshots AS s SET version = i.version, data = i.data, updated_at = i.updated_at
    FROM input AS i
    WHERE i.expected > 0 AND s.uuid = i.uuid AND s.version = i.expected AND s.data IS NOT NULL
    RETURNING s.uuid
), written AS (
    SELECT uuid FROM created UNION ALL SELECT uuid FROM updated
), event_rows AS (
    INSERT INTO events (uuid, name, version, action, data, created_at)
    SELECT e.uuid, e.name, e.version, e.action, e.data, e.created_at
    FROM UNNEST($8::uuid[], $9::text[], $10::int8[], $11::text[], $12::jsonb[], $13::timestamptz[])
        WITH ORDINALITY AS e(uuid, name, version, action, data, created_at, position)
    WHERE e.uuid IN (SELECT uuid FROM written)
    ORDER BY e.position
    RETURNING id, uuid, version, xact
), outbox_rows AS (
    INSERT INTO outbox (identifier, topic, key, payload, created_at, headers)
    SELECT o.identifier, o.topic, o.key, o.payload, o.created_at,
        COALESCE(o.headers, '{}'::jsonb) || jsonb_build_object('position', ev.xact::text || '.' || ev.id::text)
    FROM UNNEST($14::uuid[], $15::text[], $16::text[], $17::jsonb[], $18::timestamptz[], $19::uuid[], $20::jsonb[], $21::int8[])
        WITH ORDINALITY AS o(identifier, topic, key, payload, created_at, root, headers, version, position)
    JOIN event_rows AS ev ON ev.uuid = o.root AND ev.version = o.version
    ORDER BY o.position
    RETURNING id, identifier
)
SELECT id, uuid, version, xact, NULL::int8, NULL::uuid FROM event_rows
UNION ALL SELECT NULL, NULL, NULL, NULL, id, identifier FROM outbox_rows";

/// [`COMMIT_SQL`] for a batch of creations (each root created once in the batch, so snapshot `i` is
/// event `i`'s; a root that exists already is skipped by `ON CONFLICT` and answered as a lost race): no update
/// branch, the events' columns beside their snapshots'. With one row it runs about 10% faster on the
/// server than the general statement (pgbench, one client).
const CREATES_SQL: &str = "\
WITH input AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::jsonb[], $5::timestamptz[], $6::timestamptz[],
        $7::text[], $8::jsonb[], $9::timestamptz[])
        WITH ORDINALITY AS t(uuid, name, version, data, s_created, s_updated, action, diff, created_at, position)
), created AS (
    INSERT INTO snapshots (uuid, name, version, data, created_at, updated_at)
    SELECT uuid, name, version, data, s_created, s_updated FROM input
    ON CONFLICT (uuid) DO NOTHING
    RETURNING uuid
), event_rows AS (
    INSERT INTO events (uuid, name, version, action, data, created_at)
    SELECT i.uuid, i.name, i.version, i.action, i.diff, i.created_at
    FROM input AS i JOIN created AS c ON c.uuid = i.uuid
    ORDER BY i.position
    RETURNING id, uuid, version, xact
), outbox_rows AS (
    INSERT INTO outbox (identifier, topic, key, payload, created_at, headers)
    SELECT o.identifier, o.topic, o.key, o.payload, o.created_at,
        COALESCE(o.headers, '{}'::jsonb) || jsonb_build_object('position', ev.xact::text || '.' || ev.id::text)
    FROM UNNEST($10::uuid[], $11::text[], $12::text[], $13::jsonb[], $14::timestamptz[], $15::uuid[], $16::jsonb[])
        WITH ORDINALITY AS o(identifier, topic, key, payload, created_at, root, headers, position)
    JOIN event_rows AS ev ON ev.uuid = o.root
    ORDER BY o.position
    RETURNING id, identifier
)
SELECT id, uuid, version, xact, NULL::int8, NULL::uuid FROM event_rows
UNION ALL SELECT NULL, NULL, NULL, NULL, id, identifier FROM outbox_rows";

/// Each written event's global position (id, commit) by root and version, and the outbox rows
/// written (id, message identifier).
type Positions = (HashMap<(Uuid, i64), (i64, i64)>, Vec<(i64, Uuid)>);

/// What one statement wrote: each item's answer, and the outbox rows (id, message identifier).
pub(super) struct Written {
    pub(super) results: Vec<Result<StoredEvent, StoreError>>,
    pub(super) outbox: Vec<(i64, Uuid)>,
}

/// Commits `items`: version checks in Rust against the stored snapshots (read only when a batch holds
/// updates), then one atomic statement for the whole batch.
async fn commit(pool: &Pool, items: &[(&Event, &[DomainMessage])]) -> Result<Written, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    commit_written(&client, items).await
}

/// [`commit`] on a given client or transaction, with the outbox rows written (for the relay's feed).
pub(super) async fn commit_written<C: GenericClient + Sync>(
    client: &C,
    items: &[(&Event, &[DomainMessage])],
) -> Result<Written, StoreError> {
    let stored = stored_snapshots(client, items).await?;
    let checked = check(items, stored)?;
    if checked.accepted.is_empty() {
        return Ok(Written {
            results: checked
                .results
                .into_iter()
                .map(|r| r.unwrap_or_else(unreachable_result))
                .collect(),
            outbox: Vec::new(),
        });
    }
    let (ids, outbox) = match lone_create(items, &checked) {
        Some(lone) => write_create(client, items, lone, &checked).await?,
        None => write(client, items, &checked).await?,
    };
    Ok(Written {
        results: answer(client, items, checked.results, &ids).await,
        outbox,
    })
}

/// The event and its one message when `items` is a lone creation with one message (a root's create,
/// the common single append): it has a statement of its own, [`CREATE_SQL`].
fn lone_create<'a>(
    items: &[(&'a Event, &'a [DomainMessage])],
    checked: &Checked,
) -> Option<(&'a Event, &'a DomainMessage)> {
    match (items, checked.accepted.as_slice()) {
        ([(event, [message])], [0]) if event.action == Action::Create => Some((event, message)),
        _ => None,
    }
}

/// [`COMMIT_SQL`] for one created root with one message, its values as plain parameters: no arrays to
/// unnest, no update branch, no ordering. On the server it runs about 25% faster than the general
/// statement with one row (pgbench, one client). Nothing is written when the root exists already.
const CREATE_SQL: &str = "\
WITH created AS (
    INSERT INTO snapshots (uuid, name, version, data, created_at, updated_at)
    VALUES ($1::uuid, $2::text, $3::int8, $4::jsonb, $5::timestamptz, $6::timestamptz)
    ON CONFLICT (uuid) DO NOTHING
    RETURNING uuid
), event_row AS (
    INSERT INTO events (uuid, name, version, action, data, created_at)
    SELECT uuid, $2::text, $3::int8, $7::text, $8::jsonb, $9::timestamptz FROM created
    RETURNING id, xact
), outbox_row AS (
    INSERT INTO outbox (identifier, topic, key, payload, created_at, headers)
    SELECT $10::uuid, $11::text, $12::text, $13::jsonb, $9::timestamptz,
        COALESCE($14::jsonb, '{}'::jsonb) || jsonb_build_object('position', xact::text || '.' || id::text)
    FROM event_row
    RETURNING id
)
SELECT id, xact, (SELECT id FROM outbox_row) FROM event_row";

/// Runs [`CREATE_SQL`] for `items`' one event and message; the event's global position, by root and
/// version, and its outbox row, as [`write`] answers.
async fn write_create<C: GenericClient + Sync>(
    client: &C,
    items: &[(&Event, &[DomainMessage])],
    (event, message): (&Event, &DomainMessage),
    checked: &Checked,
) -> Result<Positions, StoreError> {
    let snapshot = checked
        .current
        .get(&event.uuid)
        .ok_or_else(|| StoreError::backend(BACKEND, "the created root's snapshot is missing"))?;
    let data = snapshot.data.clone().map(Value::Object);
    let diff = diff_json(event)?;
    let headers = (!message.headers.is_empty()).then(|| serde_json::json!(message.headers));
    let version = event.version as i64;
    let statement = prepared(client, CREATE_SQL).await?;
    let row = client
        .query_opt(
            &statement,
            &[
                &event.uuid,
                &event.name,
                &version,
                &data,
                &snapshot.created_at,
                &snapshot.updated_at,
                &event.action.as_str(),
                &diff,
                &event.created_at,
                &message.identifier,
                &message.topic,
                &message.key,
                &message.content,
                &headers,
            ],
        )
        .await
        .map_err(|e| write_error(e, items, checked))?;
    let Some(row) = row else {
        return Ok((HashMap::new(), Vec::new()));
    };
    let outbox = row
        .get::<_, Option<i64>>(2)
        .map(|id| (id, message.identifier));
    Ok((
        HashMap::from([((event.uuid, version), (row.get(0), row.get(1)))]),
        outbox.into_iter().collect(),
    ))
}

/// The stored snapshots of the roots `items` change: creations need none.
async fn stored_snapshots<C: GenericClient + Sync>(
    client: &C,
    items: &[(&Event, &[DomainMessage])],
) -> Result<HashMap<Uuid, Snapshot>, StoreError> {
    let mut wanted: Vec<Uuid> = items
        .iter()
        .filter(|(e, _)| e.action != Action::Create)
        .map(|(e, _)| e.uuid)
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut current: HashMap<Uuid, Snapshot> = HashMap::new();
    if !wanted.is_empty() {
        let statement = prepared(
            client,
            &format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE uuid = ANY($1)"),
        )
        .await?;
        for row in client
            .query(&statement, &[&wanted])
            .await
            .map_err(db_error)?
        {
            let snapshot = decode_snapshot(&row)?;
            current.insert(snapshot.uuid, snapshot);
        }
    }
    Ok(current)
}

/// A batch after the version checks.
struct Checked {
    /// Per item: its answer when it failed its check, `None` when accepted.
    results: Vec<Option<Result<StoredEvent, StoreError>>>,
    /// The accepted items, by index, in order.
    accepted: Vec<usize>,
    /// The roots the accepted items change, in order of first change.
    touched: Vec<Uuid>,
    /// The snapshots after the accepted items (and those read, of roots no item changed).
    current: HashMap<Uuid, Snapshot>,
    /// The stored version of each root read before the batch.
    before: HashMap<Uuid, u64>,
}

/// Checks each item against the snapshots as the items before it in the batch leave them.
fn check(
    items: &[(&Event, &[DomainMessage])],
    mut current: HashMap<Uuid, Snapshot>,
) -> Result<Checked, StoreError> {
    let before: HashMap<Uuid, u64> = current.iter().map(|(u, s)| (*u, s.version)).collect();
    let mut results: Vec<Option<Result<StoredEvent, StoreError>>> = Vec::with_capacity(items.len());
    let mut accepted: Vec<usize> = Vec::new();
    let mut touched: Vec<Uuid> = Vec::new();
    for (i, (event, _)) in items.iter().enumerate() {
        match check_applies(current.get(&event.uuid), event) {
            Err(error) => results.push(Some(Err(error))),
            Ok(()) => {
                let next = Snapshot::next(current.get(&event.uuid), event)?;
                current.insert(event.uuid, next);
                if !touched.contains(&event.uuid) {
                    touched.push(event.uuid);
                }
                accepted.push(i);
                results.push(None);
            }
        }
    }
    Ok(Checked {
        results,
        accepted,
        touched,
        current,
        before,
    })
}

/// The parameters of [`COMMIT_SQL`]: one array per column of its snapshot, event and outbox input.
struct Columns<'a> {
    s_uuid: Vec<Uuid>,
    s_name: Vec<&'a str>,
    s_version: Vec<i64>,
    s_data: Vec<Option<Value>>,
    s_created: Vec<DateTime<Utc>>,
    s_updated: Vec<DateTime<Utc>>,
    s_expected: Vec<i64>,
    e_uuid: Vec<Uuid>,
    e_name: Vec<&'a str>,
    e_version: Vec<i64>,
    e_action: Vec<&'a str>,
    e_data: Vec<Value>,
    e_created: Vec<DateTime<Utc>>,
    o_identifier: Vec<Uuid>,
    o_topic: Vec<&'a str>,
    o_key: Vec<&'a str>,
    o_payload: Vec<&'a Value>,
    o_created: Vec<DateTime<Utc>>,
    o_root: Vec<Uuid>,
    o_headers: Vec<Option<Value>>,
    o_version: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn new(
        items: &[(&'a Event, &'a [DomainMessage])],
        checked: &'a Checked,
    ) -> Result<Self, StoreError> {
        let snapshots: Vec<&Snapshot> = checked
            .touched
            .iter()
            .filter_map(|u| checked.current.get(u))
            .collect();
        let events: Vec<&Event> = checked.accepted.iter().map(|&i| items[i].0).collect();
        let messages: Vec<(&DomainMessage, &Event)> = checked
            .accepted
            .iter()
            .flat_map(|&i| items[i].1.iter().map(move |m| (m, items[i].0)))
            .collect();
        Ok(Columns {
            s_uuid: snapshots.iter().map(|s| s.uuid).collect(),
            s_name: snapshots.iter().map(|s| s.name.as_str()).collect(),
            s_version: snapshots.iter().map(|s| s.version as i64).collect(),
            s_data: snapshots
                .iter()
                .map(|s| s.data.clone().map(Value::Object))
                .collect(),
            s_created: snapshots.iter().map(|s| s.created_at).collect(),
            s_updated: snapshots.iter().map(|s| s.updated_at).collect(),
            s_expected: snapshots
                .iter()
                .map(|s| checked.before.get(&s.uuid).copied().unwrap_or(0) as i64)
                .collect(),
            e_uuid: events.iter().map(|e| e.uuid).collect(),
            e_name: events.iter().map(|e| e.name.as_str()).collect(),
            e_version: events.iter().map(|e| e.version as i64).collect(),
            e_action: events.iter().map(|e| e.action.as_str()).collect(),
            e_data: events
                .iter()
                .map(|e| diff_json(e))
                .collect::<Result<_, _>>()?,
            e_created: events.iter().map(|e| e.created_at).collect(),
            o_identifier: messages.iter().map(|(m, _)| m.identifier).collect(),
            o_topic: messages.iter().map(|(m, _)| m.topic.as_str()).collect(),
            o_key: messages.iter().map(|(m, _)| m.key.as_str()).collect(),
            o_payload: messages.iter().map(|(m, _)| &m.content).collect(),
            o_created: messages.iter().map(|(_, e)| e.created_at).collect(),
            o_root: messages.iter().map(|(_, e)| e.uuid).collect(),
            o_headers: messages
                .iter()
                .map(|(m, _)| (!m.headers.is_empty()).then(|| serde_json::json!(m.headers)))
                .collect(),
            o_version: messages.iter().map(|(_, e)| e.version as i64).collect(),
        })
    }

    /// The parameters of [`CREATES_SQL`], `$1` to `$16`, in order.
    fn creation_params(&self) -> [&(dyn ToSql + Sync); 16] {
        [
            &self.s_uuid,
            &self.s_name,
            &self.s_version,
            &self.s_data,
            &self.s_created,
            &self.s_updated,
            &self.e_action,
            &self.e_data,
            &self.e_created,
            &self.o_identifier,
            &self.o_topic,
            &self.o_key,
            &self.o_payload,
            &self.o_created,
            &self.o_root,
            &self.o_headers,
        ]
    }

    /// `$1` to `$21`, in order.
    fn params(&self) -> [&(dyn ToSql + Sync); 21] {
        [
            &self.s_uuid,
            &self.s_name,
            &self.s_version,
            &self.s_data,
            &self.s_created,
            &self.s_updated,
            &self.s_expected,
            &self.e_uuid,
            &self.e_name,
            &self.e_version,
            &self.e_action,
            &self.e_data,
            &self.e_created,
            &self.o_identifier,
            &self.o_topic,
            &self.o_key,
            &self.o_payload,
            &self.o_created,
            &self.o_root,
            &self.o_headers,
            &self.o_version,
        ]
    }
}

/// Runs [`COMMIT_SQL`] (or [`CREATES_SQL`] when they only create roots) for the accepted items; the
/// global position of each event written, by root and version, and the outbox rows written.
async fn write<C: GenericClient + Sync>(
    client: &C,
    items: &[(&Event, &[DomainMessage])],
    checked: &Checked,
) -> Result<Positions, StoreError> {
    let columns = Columns::new(items, checked)?;
    // Only creations: `check` accepts one per root, so snapshot `i` is event `i`'s.
    let creations = checked
        .accepted
        .iter()
        .all(|&i| items[i].0.action == Action::Create);
    debug_assert!(!creations || columns.s_uuid == columns.e_uuid);
    let rows = match creations {
        true => {
            let statement = prepared(client, CREATES_SQL).await?;
            client.query(&statement, &columns.creation_params()).await
        }
        false => {
            let statement = prepared(client, COMMIT_SQL).await?;
            client.query(&statement, &columns.params()).await
        }
    };
    let rows = rows.map_err(|e| write_error(e, items, checked))?;
    // The events' rows, then the outbox rows' (id and identifier in the last two columns).
    let mut positions = HashMap::with_capacity(rows.len());
    let mut outbox = Vec::new();
    for row in &rows {
        match row.get::<_, Option<i64>>(4) {
            Some(id) => outbox.push((id, row.get(5))),
            None => {
                positions.insert((row.get(1), row.get(2)), (row.get(0), row.get(3)));
            }
        }
    }
    Ok((positions, outbox))
}

/// An event's field diff as the JSON its row stores.
fn diff_json(event: &Event) -> Result<Value, StoreError> {
    serde_json::to_value(&event.fields_diff)
        .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))
}

/// What a failed write statement means: a conflict when another writer inserted the same version
/// between our read (or check) and write, naming the root the server names in its detail (`Key (uuid,
/// version)=(…, 3) already exists.`), not merely the first of the batch; else a database error.
fn write_error(
    error: tokio_postgres::Error,
    items: &[(&Event, &[DomainMessage])],
    checked: &Checked,
) -> StoreError {
    if error.code() != Some(&SqlState::UNIQUE_VIOLATION) {
        return db_error(error);
    }
    let detail = error
        .as_db_error()
        .and_then(|db| db.detail())
        .unwrap_or_default();
    let culprit = checked
        .accepted
        .iter()
        .map(|&i| items[i].0)
        .find(|event| detail.contains(&event.uuid.to_string()))
        .unwrap_or(items[checked.accepted[0]].0);
    StoreError::Conflict {
        name: culprit.name.clone(),
        uuid: culprit.uuid,
        expected: culprit.version.saturating_sub(1),
        actual: culprit.version,
    }
}

/// The answer of each item: its failed check, its stored event, or the conflict of an accepted append
/// whose event was not written.
async fn answer<C: GenericClient + Sync>(
    client: &C,
    items: &[(&Event, &[DomainMessage])],
    results: Vec<Option<Result<StoredEvent, StoreError>>>,
    ids: &HashMap<(Uuid, i64), (i64, i64)>,
) -> Vec<Result<StoredEvent, StoreError>> {
    let mut out = Vec::with_capacity(items.len());
    for (i, result) in results.into_iter().enumerate() {
        let event = items[i].0;
        out.push(match result {
            Some(result) => result,
            None => match ids.get(&(event.uuid, event.version as i64)) {
                Some(&(id, commit)) => Ok(StoredEvent {
                    id,
                    commit,
                    event: event.clone(),
                }),
                // The snapshot moved on (or appeared) since it was read: another writer won.
                None => Err(lost_race(client, event).await),
            },
        });
    }
    out
}

/// The conflict error for an append another writer beat, with the version now stored.
async fn lost_race<C: GenericClient + Sync>(client: &C, event: &Event) -> StoreError {
    let actual = client
        .query_opt(
            "SELECT version, data IS NULL FROM snapshots WHERE uuid = $1",
            &[&event.uuid],
        )
        .await
        .ok()
        .flatten();
    match actual {
        Some(row) if row.get::<_, bool>(1) => StoreError::AlreadyDeleted {
            name: event.name.clone(),
            uuid: event.uuid,
        },
        row => StoreError::Conflict {
            name: event.name.clone(),
            uuid: event.uuid,
            expected: event.version.saturating_sub(1),
            actual: row.map_or(0, |r| r.get::<_, i64>(0) as u64),
        },
    }
}

fn unreachable_result() -> Result<StoredEvent, StoreError> {
    Err(StoreError::backend(BACKEND, "append result missing"))
}
