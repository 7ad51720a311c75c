//! A small blocking HTTP client for driving a service in tests, like a user with curl would.

use std::time::Duration;

use minos::serde_json::{self, Value};

/// An HTTP answer: status, raw body, and the body as JSON when it is JSON.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
    /// The `Allow` header, if any.
    pub allow: Option<String>,
    /// The `WWW-Authenticate` header, if any.
    pub www_authenticate: Option<String>,
    /// Every header, by lower-case name.
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Answer {
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Talks to one service.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    authorization: Option<String>,
    extra: Vec<(String, String)>,
}

impl Client {
    /// A client of the service at `base` (`http://127.0.0.1:4545`).
    pub fn new(base: impl Into<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client {
            base: base.into(),
            agent,
            authorization: None,
            extra: Vec::new(),
        }
    }

    /// This client, sending `name: value` with every request (`minos-position`, …).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.extra.push((name.to_owned(), value.to_owned()));
        self
    }

    /// This client, sending `Authorization: Bearer {token}` with every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let mut request = match &self.authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        };
        for (name, value) in &self.extra {
            request = request.header(name, value);
        }
        request
    }

    /// Sends `method path` with `body` (raw text, sent as JSON) and returns the answer.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<Answer, String> {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("GET", None) => self.authorized(self.agent.get(&url)).call(),
            ("DELETE", None) => self.authorized(self.agent.delete(&url)).call(),
            ("DELETE", Some(body)) => self
                .authorized(self.agent.delete(&url).force_send_body())
                .header("content-type", "application/json")
                .send(body),
            ("POST", body) => self
                .authorized(self.agent.post(&url))
                .header("content-type", "application/json")
                .send(body.unwrap_or_default()),
            ("PUT", body) => self
                .authorized(self.agent.put(&url))
                .header("content-type", "application/json")
                .send(body.unwrap_or_default()),
            ("PATCH", body) => self
                .authorized(self.agent.patch(&url))
                .header("content-type", "application/json")
                .send(body.unwrap_or_default()),
            (method, _) => return Err(format!("unsupported method {method}")),
        };
        let mut response = result.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let allow = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let www_authenticate = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
        Ok(Answer {
            status,
            body,
            allow,
            www_authenticate,
            headers,
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Answer, String> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &str) -> Result<Answer, String> {
        self.request("POST", path, Some(body))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<Answer, String> {
        self.request("DELETE", path, None)
    }
}
