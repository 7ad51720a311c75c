//! A small HTTP/1 client over hyper, for the runtime's own calls to other processes (the registry's
//! health probes, registration with a registry) and the test client: one request per connection.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::collections::BTreeMap;
use tokio::net::TcpStream;

/// An HTTP answer.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method http://{authority}{path}` with an optional body sent as it is with
/// `Content-Type: application/json` (so tests can send malformed JSON too), waiting at most `timeout`
/// for the whole exchange. The error says what failed.
pub async fn request(
    authority: &str,
    method: &str,
    path: &str,
    body: Option<String>,
    timeout: Duration,
) -> Result<HttpAnswer, String> {
    request_with(authority, method, path, &[], body, timeout).await
}

/// [`request`] with extra headers (`("authorization", "Bearer …")`).
pub async fn request_with(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
    timeout: Duration,
) -> Result<HttpAnswer, String> {
    let exchange = async {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connecting to {authority}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {authority}: {e}"))?;
        let driver = tokio::spawn(connection);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority);
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let payload = body.unwrap_or_default();
        let request = builder
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| format!("building {method} {path}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{method} http://{authority}{path}: {e}"))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {method} {path}: {e}"))?
            .to_bytes()
            .to_vec();
        driver.abort();
        Ok(HttpAnswer {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{method} http://{authority}{path}: no answer within {timeout:?}"))?
}
