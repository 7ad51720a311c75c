//! `gateway:` of the configuration: timeouts, the registry long poll, CORS and composed routes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `gateway:` of the configuration, read by `minos gateway` (see the [module docs](super)).
///
/// ```yaml
/// gateway:
///   timeout_ms: 30000                 # until the response head, per request
///   timeouts: {"POST /reports": 120000} # per route ("METHOD /template" as registered)
///   connect_timeout_ms: 2000
///   poll_wait_ms: 25000               # how long one long poll of the registry waits for a change
///   workers: 2                        # threads (default: one per core)
///   cors: {allow_origins: ["https://app.example"], allow_credentials: true}
///   compose:
///     - route: GET /foos/{uuid}/full
///       parts:
///         foo: GET /foos/{uuid}
///         foobar: {call: "GET /foobars/{foo.foobar}", optional: true}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// How long a request waits for the service's response head (the body then streams without a
    /// limit), in milliseconds.
    pub timeout_ms: u64,
    /// Per-route overrides of `timeout_ms`: `"METHOD /template"` (as the service registered it) →
    /// ms.
    pub timeouts: BTreeMap<String, u64>,
    /// How long connecting to an instance may take before the next instance is tried.
    pub connect_timeout_ms: u64,
    /// How long one long poll of the registry's listing waits for a change.
    pub poll_wait_ms: u64,
    /// Cross-origin requests from browsers; off while `allow_origins` is empty.
    pub cors: CorsConfig,
    /// Routes the gateway answers itself by calling several services (see the module docs).
    pub compose: Vec<ComposeConfig>,
    /// Worker threads, each serving its share of the connections with a client pool of its own
    /// (default: one per core; `minos gateway` takes `http.workers` when this is not set).
    pub workers: Option<usize>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            timeout_ms: 30_000,
            timeouts: BTreeMap::new(),
            connect_timeout_ms: 2_000,
            poll_wait_ms: 25_000,
            cors: CorsConfig::default(),
            compose: Vec::new(),
            workers: None,
        }
    }
}

/// `gateway.cors`: which browser origins may call the API, and what they may send and read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed (`https://app.example`), or `"*"` for any. Empty: CORS is off and preflight
    /// requests go to the services like any request.
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for.
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for; empty (or `"*"`): whatever it asks for.
    pub allow_headers: Vec<String>,
    /// Response headers the browser lets scripts read, beyond the always-safe ones (default:
    /// `minos-position`, which a client sends back to read its own writes in the views).
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight's answer.
    pub max_age_secs: u64,
    /// Whether requests with cookies or `Authorization` may be read (the origin is then echoed,
    /// never `*`).
    pub allow_credentials: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allow_origins: Vec::new(),
            allow_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .map(String::from)
                .to_vec(),
            allow_headers: Vec::new(),
            expose_headers: vec![crate::views::POSITION_HEADER.to_owned()],
            max_age_secs: 600,
            allow_credentials: false,
        }
    }
}

/// One composed route of `gateway.compose`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeConfig {
    /// `METHOD /template`, e.g. `GET /foos/{uuid}/full`.
    pub route: String,
    /// How long each part may take, response body included (default: `gateway.timeout_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The parts by name: the name is the key of the part's answer in the composed answer.
    pub parts: BTreeMap<String, PartConfig>,
}

/// One part of a composed route: `GET /foos/{uuid}`, or `{call: "GET /foos/{uuid}", optional:
/// true}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a call like \"GET /foos/{uuid}\", or {call: \"GET /foos/{uuid}\", optional: true}"
)]
pub enum PartConfig {
    /// Just the call: a required part.
    Call(String),
    /// The call and whether the part may fail.
    Detailed(PartSpec),
}

/// The long form of a part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    /// `METHOD /path`, with `{param}` from the composed route's path and `{part.field}` from
    /// another part's answer.
    pub call: String,
    /// Whether a failure leaves the part `null` (listed in `_partial`) instead of failing the
    /// answer.
    #[serde(default)]
    pub optional: bool,
}

impl PartConfig {
    /// The call, `METHOD /path`.
    pub fn call(&self) -> &str {
        match self {
            PartConfig::Call(call) => call,
            PartConfig::Detailed(spec) => &spec.call,
        }
    }

    /// Whether the part may fail.
    pub fn optional(&self) -> bool {
        matches!(self, PartConfig::Detailed(PartSpec { optional: true, .. }))
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn the_gateway_section_reads_both_forms_of_parts_and_refuses_unknown_keys() {
        let yaml = r#"
gateway:
  timeout_ms: 5000
  timeouts: {"GET /slow": 60000}
  cors: {allow_origins: ["*"]}
  compose:
    - route: GET /foos/{uuid}/full
      parts:
        foo: GET /foos/{uuid}
        foobar: {call: "GET /foobars/{foo.foobar}", optional: true}
"#;
        let config = Config::from_yaml(yaml).unwrap();
        let gateway = config.gateway;
        assert_eq!((gateway.timeout_ms, gateway.poll_wait_ms), (5000, 25_000));
        assert_eq!(gateway.timeouts["GET /slow"], 60_000);
        assert_eq!(gateway.cors.allow_origins, ["*"]);
        assert_eq!(gateway.cors.max_age_secs, 600);
        let parts = &gateway.compose[0].parts;
        assert_eq!(parts["foo"].call(), "GET /foos/{uuid}");
        assert!(!parts["foo"].optional() && parts["foobar"].optional());
        for bad in [
            "gateway: {timeout: 1}",
            "gateway: {cors: {allow_origin: ['*']}}",
            "gateway: {compose: [{route: GET /x, parts: {a: {call: GET /a, optionl: true}}}]}",
        ] {
            assert!(Config::from_yaml(bad).is_err(), "{bad}");
        }
    }
}
