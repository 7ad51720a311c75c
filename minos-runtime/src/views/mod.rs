//! The CQRS read side: views (read models) kept in a *view database* of their own, written by the query
//! service's event handlers that declare them, in the commit order of the events' owner.
//!
//! A view is a struct marked `#[view]` with one `#[key]` field; scalar fields become real columns
//! (`#[index]` ones get an index), the whole value is kept as JSON. Handlers declared with
//! `#[enroute(event = "FooCreated", view = FooSummary)]` are run by a *projection* per view and source
//! type: it reads the owner's event log after the view's position (the local store, or
//! `_Get{Type}Events` from the service that owns the type), runs the handlers of each event's messages
//! inside one transaction of the view database, and moves the position in the same transaction. So a
//! replayed or redelivered event changes nothing twice, a crash loses nothing, one root's events apply
//! in order, and a new view — or one whose definition changed — is built from the whole history
//! before it follows new events, with no gap and no duplicate. Live messages on those topics only wake
//! the projection up.

mod database;
mod endpoints;
pub(crate) mod log;
mod positions;
mod projection;
mod query;
mod sql;

use std::collections::BTreeMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::{Condition, Ordering};
use crate::error::{Error, Result};
use crate::store::{Position, StoreError};

pub use database::Views;
pub(crate) use endpoints::http_routes;
pub(crate) use projection::{Projections, ViewPlan};
pub use sql::SqlValue;

use database::Tx;

/// How a view field is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ColumnKind {
    /// `String`: text, compared byte-wise.
    Text,
    /// Integers up to 64 bits.
    Integer,
    /// `f32`, `f64`.
    Real,
    /// `bool`.
    Bool,
    /// `Uuid`, as its text.
    Uuid,
    /// `DateTime<Utc>`, as RFC 3339 text with microseconds (sorts as time).
    Timestamp,
    /// Anything else (lists, maps, nested structs): kept in the JSON of the view only.
    Json,
}

impl ColumnKind {
    /// Whether the field has a column of its own (conditions, orderings and indexes need one).
    pub fn is_scalar(self) -> bool {
        self != ColumnKind::Json
    }
}

/// One field of a view.
#[derive(Debug)]
pub struct ViewColumn {
    /// The field's name (its JSON key).
    pub name: &'static str,
    /// How it is stored.
    pub kind: ColumnKind,
    /// An `Option`.
    pub nullable: bool,
    /// Marked `#[index]`.
    pub indexed: bool,
}

/// A view's definition, written by `#[view]`.
#[derive(Debug)]
pub struct ViewDef {
    /// The view's name (the struct's, or `name = ".."`).
    pub name: &'static str,
    /// The `#[key]` field.
    pub key: &'static str,
    /// Every field, in declaration order.
    pub columns: &'static [ViewColumn],
    /// `version = N` of `#[view(..)]` (1 by default): raise it to rebuild the view after changing how
    /// its handlers compute it.
    pub version: u32,
    /// The definition as the macro saw it (field names, types, key and indexes): a change rebuilds the
    /// view.
    pub shape: &'static str,
    /// Where it is defined.
    pub file: &'static str,
    /// The line of its definition.
    pub line: u32,
}

impl ViewDef {
    /// The view's table: `view_` and the name in snake case.
    pub fn table(&self) -> String {
        let mut table = String::from("view_");
        for (i, c) in self.name.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    table.push('_');
                }
                table.push(c.to_ascii_lowercase());
            } else if c.is_ascii_alphanumeric() {
                table.push(c);
            } else {
                table.push('_');
            }
        }
        table
    }

    /// The field named `name`.
    pub fn column(&self, name: &str) -> Option<&'static ViewColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The key field (`None` only for a definition not written by `#[view]` that names no field).
    pub fn key_column(&self) -> Option<&'static ViewColumn> {
        self.column(self.key)
    }

    /// The fields with a column of their own.
    pub fn scalar_columns(&self) -> impl Iterator<Item = &'static ViewColumn> {
        self.columns.iter().filter(|c| c.kind.is_scalar())
    }
}

/// A read model: written by `#[view]`. Use it through [`ViewExt`] (`FooSummary::get(&key)`, …).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a view",
    label = "not a #[view]",
    note = "mark the struct `#[view]`, with one `#[key]` field, to keep it in the view database"
)]
pub trait View: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The key field's type.
    type Key: Serialize + Send + Sync;
    /// The view's name.
    const NAME: &'static str;
    /// The definition.
    const DEF: &'static ViewDef;
}

/// A view's registration, collected from every `#[view]` of the program.
#[derive(Debug)]
pub struct ViewEntry {
    /// The definition.
    pub def: &'static ViewDef,
}

inventory::collect!(ViewEntry);

/// Every view of the program.
pub fn registered() -> impl Iterator<Item = &'static ViewDef> {
    inventory::iter::<ViewEntry>.into_iter().map(|e| e.def)
}

/// The view named `name`.
pub fn definition(name: &str) -> Option<&'static ViewDef> {
    registered().find(|d| d.name == name)
}

tokio::task_local! {
    /// The projection transaction a handler writes in, and the one view it may write.
    static WRITING: Writing;
}

#[derive(Clone)]
struct Writing {
    tx: Arc<tokio::sync::Mutex<Box<dyn Tx>>>,
    view: &'static str,
    views: Views,
}

/// The transaction of the running projection (for handlers that want their own SQL): statements run
/// inside it and commit, or roll back, with the view writes and the position.
///
/// ```no_run
/// # async fn handler() -> minos_runtime::Result<()> {
/// let rows = minos_runtime::views::sql(
///     "SELECT COUNT(*) AS n FROM view_foo_summary WHERE bar = $1",
///     &["x".into()],
/// )
/// .await?;
/// # let _ = rows;
/// # Ok(())
/// # }
/// ```
pub async fn sql(statement: &str, params: &[SqlValue]) -> Result<Vec<Map<String, Value>>> {
    let (statement, params) = (statement.to_owned(), params.to_vec());
    with_connection(None, move |tx| {
        Box::pin(async move { tx.query_json(&statement, &params).await })
    })
    .await
}

/// Runs `future` with `tx` as the transaction writes to `view` go to.
pub(crate) fn writing<F: Future>(
    views: Views,
    tx: Arc<tokio::sync::Mutex<Box<dyn Tx>>>,
    view: &'static str,
    future: F,
) -> impl Future<Output = F::Output> {
    WRITING.scope(Writing { tx, view, views }, future)
}

fn write_scope(def: &'static ViewDef) -> Result<Writing> {
    let writing = WRITING.try_with(Writing::clone).map_err(|_| {
        Error::bad_request(format!(
            "view {} is written only by the event handlers that declare it: \
             `#[enroute(event = \"FooCreated\", view = {})]` in a #[query_service]",
            def.name, def.name
        ))
    })?;
    if writing.view != def.name {
        return Err(Error::bad_request(format!(
            "this handler declares `view = {}`, so it cannot write view {}: \
             write {} from a handler that declares `view = {}`",
            writing.view, def.name, def.name, def.name
        )));
    }
    Ok(writing)
}

/// Runs `op` on the projection's transaction inside a view handler (so it sees the writes made so
/// far), or on a read connection of the current view database otherwise; with `def`, after checking
/// that the view's tables are there.
async fn with_connection<T, F>(def: Option<&'static ViewDef>, op: F) -> Result<T>
where
    F: for<'a> FnOnce(
        &'a mut dyn Tx,
    ) -> Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>,
{
    if let Ok(writing) = WRITING.try_with(Writing::clone) {
        if let Some(def) = def {
            writing.views.ready(def)?;
        }
        let mut tx = writing.tx.lock().await;
        return Ok(op(tx.as_mut()).await?);
    }
    let views = Views::current()?;
    if let Some(def) = def {
        views.ready(def)?;
    }
    let mut tx = views.read().await?;
    Ok(op(tx.as_mut()).await?)
}

/// Typed operations on a view, on the view database of the running service (or of
/// [`Views::scope`]). Reads work anywhere; writes only in the event handlers that declare the view.
pub trait ViewExt: View + Sized {
    /// The view with this key.
    fn get(key: &Self::Key) -> impl Future<Output = Result<Option<Self>>> + Send {
        let key = serde_json::to_value(key);
        async move {
            let key = sql::key_value(Self::DEF, &key.map_err(json_error)?)?;
            let found = with_connection(Some(Self::DEF), |tx| {
                Box::pin(async move { sql::get(tx, Self::DEF, &key).await })
            })
            .await?;
            found.map(|json| decode::<Self>(&json)).transpose()
        }
    }

    /// Stores `value`, replacing the view with the same key.
    fn upsert(value: &Self) -> impl Future<Output = Result<()>> + Send {
        let json = serde_json::to_value(value);
        async move {
            let writing = write_scope(Self::DEF)?;
            let row = sql::Row::of(Self::DEF, json.map_err(json_error)?)?;
            let mut tx = writing.tx.lock().await;
            Ok(sql::upsert(tx.as_mut(), Self::DEF, row).await?)
        }
    }

    /// Deletes the view with this key; `false` when there was none.
    fn delete(key: &Self::Key) -> impl Future<Output = Result<bool>> + Send {
        let key = serde_json::to_value(key);
        async move {
            let writing = write_scope(Self::DEF)?;
            let key = sql::key_value(Self::DEF, &key.map_err(json_error)?)?;
            let mut tx = writing.tx.lock().await;
            Ok(sql::delete(tx.as_mut(), Self::DEF, &key).await?)
        }
    }

    /// Views matching `condition` (on scalar fields); refine with `.order_by(..)`, `.limit(..)` and
    /// `.offset(..)`, then `.await`.
    fn find(condition: Condition) -> ViewFind<Self> {
        ViewFind::new(condition)
    }

    /// Every view, in key order unless ordered otherwise.
    fn all() -> ViewFind<Self> {
        ViewFind::new(Condition::True)
    }

    /// How many views match `condition`.
    fn count(condition: Condition) -> impl Future<Output = Result<u64>> + Send {
        async move {
            with_connection(Some(Self::DEF), move |tx| {
                Box::pin(async move { query::count(tx, Self::DEF, &condition).await })
            })
            .await
        }
    }
}

impl<T: View> ViewExt for T {}

fn json_error(error: serde_json::Error) -> Error {
    Error::Store(StoreError::Domain(crate::domain::DomainError::Json(error)))
}

fn decode<T: View>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(json_error)
}

/// A view query: `FooSummary::find(Condition::eq("bar", "x")).order_by(Ordering::desc("count")).limit(10)`.
#[must_use = "a query does nothing until awaited"]
pub struct ViewFind<T: View> {
    query: ViewQuery,
    _view: PhantomData<fn() -> T>,
}

impl<T: View> fmt::Debug for ViewFind<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewFind")
            .field("view", &T::DEF.name)
            .field("query", &self.query)
            .finish()
    }
}

/// A condition with its ordering and page.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewQuery {
    /// The filter.
    pub condition: Condition,
    /// Sort keys, in order (then the key).
    pub ordering: Vec<Ordering>,
    /// At most this many.
    pub limit: Option<u64>,
    /// Skip this many first.
    pub offset: u64,
}

impl<T: View> ViewFind<T> {
    fn new(condition: Condition) -> Self {
        ViewFind {
            query: ViewQuery {
                condition,
                ordering: Vec::new(),
                limit: None,
                offset: 0,
            },
            _view: PhantomData,
        }
    }

    /// Sorts by `ordering` (after the orderings given before).
    pub fn order_by(mut self, ordering: Ordering) -> Self {
        self.query.ordering.push(ordering);
        self
    }

    /// At most `limit` views.
    pub fn limit(mut self, limit: u64) -> Self {
        self.query.limit = Some(limit);
        self
    }

    /// Skips the first `offset` views.
    pub fn offset(mut self, offset: u64) -> Self {
        self.query.offset = offset;
        self
    }

    /// The SQL this query runs and how the database plans it (`EXPLAIN QUERY PLAN` / `EXPLAIN`): shows
    /// whether an index is used.
    pub async fn explain(self) -> Result<String> {
        let query = self.query;
        with_connection(Some(T::DEF), move |tx| {
            Box::pin(async move { query::explain(tx, T::DEF, &query).await })
        })
        .await
    }
}

impl<T: View> IntoFuture for ViewFind<T> {
    type Output = Result<Vec<T>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Vec<T>>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let query = self.query;
        Box::pin(async move {
            let rows = with_connection(Some(T::DEF), move |tx| {
                Box::pin(async move { query::find(tx, T::DEF, &query).await })
            })
            .await?;
            rows.iter().map(|json| decode::<T>(json)).collect()
        })
    }
}

/// Where a view's projection of one source type stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceStatus {
    /// The root entity type whose events feed the view.
    pub source: String,
    /// The position of the last event applied.
    pub position: Position,
    /// Events of the source after that position, at the last look.
    pub behind: u64,
    /// Events applied by this process since it started.
    pub applied: u64,
    /// The last failure, while it keeps failing.
    pub error: Option<String>,
}

/// One view's state, as `GET /views` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ViewStatus {
    /// The view.
    pub name: String,
    /// Its table.
    pub table: String,
    /// `building` (replaying history), `live` (caught up), or `failed` (a handler keeps failing; the
    /// projection retries with backoff and never skips the event).
    pub state: &'static str,
    /// The definition's fingerprint (a change rebuilds the view).
    pub fingerprint: String,
    /// Per source type.
    pub sources: Vec<SourceStatus>,
}

/// Positions per source type carried from a command's response to a later query: `Foo@0.42,Bar@7.3`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Consistency {
    /// The position each source type must have reached.
    pub positions: BTreeMap<String, Position>,
}

/// The header carrying [`Consistency`]: a command's response sets it, a query that sends it back waits
/// until the views fed by those types have caught up.
pub const POSITION_HEADER: &str = "minos-position";

impl Consistency {
    /// Adds an event's position (keeps the furthest per type).
    pub fn record(&mut self, name: &str, position: Position) {
        let entry = self.positions.entry(name.to_owned()).or_default();
        *entry = (*entry).max(position);
    }

    /// Parses the header's value.
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = Consistency::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, position) = part.split_once('@').ok_or_else(|| {
                Error::bad_request(format!(
                    "`{POSITION_HEADER}: {text}`: expected `Type@COMMIT.ID` separated by commas, like `Foo@0.42`"
                ))
            })?;
            let position: Position = position
                .parse()
                .map_err(|e: String| Error::bad_request(format!("`{POSITION_HEADER}`: {e}")))?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::bad_request(format!(
                    "`{POSITION_HEADER}`: `{name}` is not a type name"
                )));
            }
            out.record(name, position);
        }
        Ok(out)
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .positions
            .iter()
            .map(|(name, position)| format!("{name}@{position}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

tokio::task_local! {
    /// The positions of the events the current request wrote (HTTP handlers).
    static WRITTEN: Arc<Mutex<Consistency>>;
}

/// Runs `future` recording the positions of the events it appends; returns them with its output.
pub(crate) fn recording<F: Future>(future: F) -> impl Future<Output = (F::Output, Consistency)> {
    use futures_util::FutureExt;
    let written = Arc::new(Mutex::new(Consistency::default()));
    WRITTEN
        .scope(Arc::clone(&written), future)
        .map(move |output| {
            let recorded = std::mem::take(&mut *written.lock().unwrap_or_else(|p| p.into_inner()));
            (output, recorded)
        })
}

/// Notes that the current request wrote an event at `position`.
pub(crate) fn note_written(name: &str, position: Position) {
    let _ = WRITTEN.try_with(|written| {
        written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(name, position)
    });
}
