//! Requests and responses, the same for HTTP, broker and periodic handlers.

use std::collections::BTreeMap;
use std::str::FromStr;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::Context;
use crate::auth::Principal;
use crate::error::{Error, Result};

/// Where a request came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// An HTTP request.
    Http {
        /// The method.
        method: String,
        /// The path as requested.
        path: String,
    },
    /// A broker message.
    Broker {
        /// Its topic.
        topic: String,
        /// Its identifier (a reply carries the same one).
        identifier: Uuid,
        /// Where the reply goes.
        reply_topic: Option<String>,
    },
    /// A periodic trigger.
    Periodic {
        /// The schedule (`@reboot` or a cron expression).
        schedule: String,
        /// When it fired.
        at: DateTime<Utc>,
    },
    /// Built by hand (tests).
    Local,
}

/// What a handler receives.
#[derive(Clone, Debug)]
pub struct Request {
    content: Value,
    params: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    origin: Origin,
    principal: Option<Arc<Principal>>,
}

impl Request {
    /// A request with this JSON content (for tests and local calls).
    pub fn new(content: Value) -> Self {
        Request {
            content,
            params: BTreeMap::new(),
            headers: BTreeMap::new(),
            origin: Origin::Local,
            principal: None,
        }
    }

    /// A request with every part given.
    pub fn from_parts(
        content: Value,
        params: BTreeMap<String, String>,
        headers: BTreeMap<String, String>,
        origin: Origin,
    ) -> Self {
        Request {
            content,
            params,
            headers,
            origin,
            principal: None,
        }
    }

    /// The verified caller (set by the runtime when the service checks tokens; tests may set one).
    pub fn with_principal(mut self, principal: Option<Arc<Principal>>) -> Self {
        self.principal = principal;
        self
    }

    /// The caller whose token the service verified: subject, roles and claims. `None` when the request
    /// carries no token, or the service has no `auth:` section.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_deref()
    }

    /// Adds a path or query parameter.
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The content as `T`; a 400 error saying what did not fit otherwise.
    pub fn content<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.content.clone())
            .map_err(|e| Error::bad_request(format!("invalid request content: {e}")))
    }

    /// The content as JSON (`Null` for an empty body).
    pub fn json(&self) -> &Value {
        &self.content
    }

    /// Path and query parameters.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    /// One parameter parsed as `T`; a 400 error when it is missing or does not parse.
    pub fn param<T>(&self, name: &str) -> Result<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let raw = self
            .params
            .get(name)
            .ok_or_else(|| Error::bad_request(format!("missing parameter `{name}`")))?;
        raw.parse()
            .map_err(|e| Error::bad_request(format!("invalid parameter `{name}` = {raw:?}: {e}")))
    }

    /// Headers (broker headers, or HTTP headers in lower case).
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// One header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The user the request acts for: the verified subject of its token. Without an `auth:` section
    /// (development) it is the `user` header as sent; with one, a `user` header sent by a client is
    /// ignored.
    pub fn user(&self) -> Option<&str> {
        match &self.principal {
            Some(principal) => Some(&principal.subject),
            None => self.header(crate::messaging::headers::USER),
        }
    }

    /// Where the request came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The broker topic the request came on (an event handler's `FooCreated`, a command's topic);
    /// `None` for HTTP and periodic requests.
    pub fn topic(&self) -> Option<&str> {
        match &self.origin {
            Origin::Broker { topic, .. } => Some(topic),
            _ => None,
        }
    }

    /// The service context.
    pub fn context(&self) -> Result<Context> {
        Context::current()
    }
}

/// What a handler answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    status: u16,
    content: Value,
    headers: BTreeMap<String, String>,
    /// No body at all ([`Response::empty`]), as opposed to a JSON `null` (`Response::json(())`).
    empty: bool,
}

impl Default for Response {
    fn default() -> Self {
        Response::empty()
    }
}

impl Response {
    /// 200 with `content` as JSON. A value that does not serialize becomes a 500.
    pub fn json(content: impl Serialize) -> Self {
        match serde_json::to_value(content) {
            Ok(content) => Response {
                status: 200,
                content,
                headers: BTreeMap::new(),
                empty: false,
            },
            Err(error) => {
                tracing::error!(%error, "response content does not serialize");
                Response {
                    status: 500,
                    content: serde_json::json!({"error": "internal error", "status": 500}),
                    headers: BTreeMap::new(),
                    empty: false,
                }
            }
        }
    }

    /// 200 without content (over HTTP: no body; `Response::json(Value::Null)` answers `null`).
    pub fn empty() -> Self {
        Response {
            status: 200,
            content: Value::Null,
            headers: BTreeMap::new(),
            empty: true,
        }
    }

    /// Whether it has no content at all ([`Response::empty`]).
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Sets the status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a header (a broker header, or an HTTP response header).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The content.
    pub fn content(&self) -> &Value {
        &self.content
    }

    /// The headers.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// The response for an error: its status and `{"error": message, "status": status}`. Failures of the
    /// service itself say only "internal error"; the details go to the log.
    pub fn from_error(error: &Error) -> Self {
        let status = error.status();
        if status >= 500 {
            tracing::error!(%error, status, "handler failed");
        }
        let mut headers = BTreeMap::new();
        if let Error::Auth(auth) = error {
            headers.insert("www-authenticate".to_owned(), auth.www_authenticate());
        }
        Response {
            status,
            content: serde_json::json!({"error": error.public_message(), "status": status}),
            headers,
            empty: false,
        }
    }
}

/// What a handler may return: `Response`, `()`, or a `Result` of those.
#[diagnostic::on_unimplemented(
    message = "a minos handler cannot return `{Self}`",
    note = "return `minos::Result<Response>`, `minos::Result<()>`, `Response` or `()`"
)]
pub trait IntoResponse {
    /// Converts into a response or an error.
    fn into_response(self) -> Result<Response>;
}

impl IntoResponse for Response {
    fn into_response(self) -> Result<Response> {
        Ok(self)
    }
}

impl IntoResponse for () {
    fn into_response(self) -> Result<Response> {
        Ok(Response::empty())
    }
}

impl<T: IntoResponse, E: Into<Error>> IntoResponse for std::result::Result<T, E> {
    fn into_response(self) -> Result<Response> {
        self.map_err(Into::into)?.into_response()
    }
}
