//! An async HTTP client for tests: JSON in; status, headers and body out.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Error, Result};

/// Talks to one service over HTTP, like a user with curl would.
#[derive(Clone, Debug)]
pub struct TestClient {
    /// `host:port`.
    authority: String,
    /// Headers sent with every request.
    headers: Vec<(String, String)>,
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
        TestClient {
            authority,
            headers: Vec::new(),
        }
    }

    /// This client, sending `name: value` with every request.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// This client, sending `Authorization: Bearer {token}` with every request.
    pub fn with_token(self, token: impl std::fmt::Display) -> Self {
        self.with_header("authorization", format!("Bearer {token}"))
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
    /// can send malformed JSON too. A service that does not answer within a minute is an error.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<TestResponse> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let answer = minos_runtime::net::request_with(
            &self.authority,
            method,
            path,
            &headers,
            body,
            std::time::Duration::from_secs(60),
        )
        .await
        .map_err(|error| Error::with_status(502, error))?;
        Ok(TestResponse {
            status: answer.status,
            body: answer.text(),
            headers: answer.headers,
        })
    }
}
