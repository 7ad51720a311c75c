//! An async HTTP client for tests: one request per connection, JSON in, status, headers and body out.

use std::collections::BTreeMap;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::{Error, Result};

/// Talks to one service over HTTP, like a user with curl would.
#[derive(Clone, Debug)]
pub struct TestClient {
    /// `host:port`.
    authority: String,
}

/// An answer: status, headers (lowercase names) and the raw body.
#[derive(Clone, Debug)]
pub struct TestResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: BTreeMap<String, String>,
    /// The body as text.
    pub body: String,
}

impl TestResponse {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The body decoded as `T`; a 400 error saying why it does not decode.
    pub fn content<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.body)
            .map_err(|e| Error::bad_request(format!("response body `{}`: {e}", self.body)))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

impl TestClient {
    /// A client of the service at `address` (`127.0.0.1:4545`, or `http://127.0.0.1:4545`).
    pub fn new(address: impl std::fmt::Display) -> Self {
        let address = address.to_string();
        let authority = address
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        TestClient { authority }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<TestResponse> {
        self.request("GET", path, None).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<TestResponse> {
        self.request("DELETE", path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Result<TestResponse> {
        self.request("POST", path, Some(body.to_string())).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> Result<TestResponse> {
        self.request("PUT", path, Some(body.to_string())).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> Result<TestResponse> {
        self.request("PATCH", path, Some(body.to_string())).await
    }

    /// `method path` with `body` sent as it is (raw text, `Content-Type: application/json`), so tests
    /// can send malformed JSON too.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<TestResponse> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::with_status(
                502,
                format!("{method} http://{}{path}: {what}: {e}", self.authority),
            )
        };
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| failed("connect", &e))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| failed("handshake", &e))?;
        // The connection is driven beside the request and ends with it.
        let driver = tokio::spawn(connection);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| failed("building the request", &e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed("sending", &e))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed("reading the body", &e))?
            .to_bytes();
        driver.abort();
        Ok(TestResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}
