//! CORS: the gateway answers preflight requests itself and marks the answers to allowed origins.

use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use hyper::Method;

use super::config::CorsConfig;

/// `gateway.cors`, with its header values built once.
#[derive(Debug)]
pub(crate) struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    /// `None`: echo what the preflight asks for.
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

/// What to answer a preflight request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Preflight {
    /// 204 with these headers.
    Allowed(HeaderMap),
    /// 403, saying why.
    Refused(String),
}

fn header_list(items: &[String]) -> Result<Option<HeaderValue>, String> {
    if items.is_empty() || items.iter().any(|item| item.trim() == "*") {
        return Ok(None);
    }
    let joined = items
        .iter()
        .map(|item| item.trim())
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&joined)
        .map(Some)
        .map_err(|_| format!("`{joined}` is not a header value"))
}

impl Cors {
    /// CORS as configured; `None` when no origin is allowed (CORS off).
    pub(crate) fn new(config: &CorsConfig) -> Result<Option<Cors>, String> {
        if config.allow_origins.is_empty() {
            return Ok(None);
        }
        let methods = config
            .allow_methods
            .iter()
            .map(|method| {
                Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("gateway.cors.allow_methods: `{method}` is not a method"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow_methods = HeaderValue::from_str(
            &methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        )
        .map_err(|e| format!("gateway.cors.allow_methods: {e}"))?;
        let expose_headers = match config.expose_headers.is_empty() {
            true => None,
            false => header_list(&config.expose_headers)
                .map_err(|e| format!("gateway.cors.expose_headers: {e}"))?
                .or(Some(HeaderValue::from_static("*"))),
        };
        Ok(Some(Cors {
            any_origin: config.allow_origins.iter().any(|o| o.trim() == "*"),
            origins: config
                .allow_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .collect(),
            methods,
            allow_methods,
            allow_headers: header_list(&config.allow_headers)
                .map_err(|e| format!("gateway.cors.allow_headers: {e}"))?,
            expose_headers,
            max_age: HeaderValue::from(config.max_age_secs),
            credentials: config.allow_credentials,
        }))
    }

    /// Whether `origin` may call.
    fn allows(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || origin
                .to_str()
                .is_ok_and(|origin| self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)))
    }

    /// `Access-Control-Allow-Origin` for an allowed origin: `*` when any origin is allowed and no
    /// credentials are, else the origin itself.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        match self.any_origin && !self.credentials {
            true => HeaderValue::from_static("*"),
            false => origin.clone(),
        }
    }

    /// Whether a request is a preflight: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`.
    pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight request with these headers.
    pub(crate) fn preflight(&self, request: &HeaderMap) -> Preflight {
        let Some(origin) = request.get(ORIGIN) else {
            return Preflight::Refused("a preflight request has an Origin".into());
        };
        if !self.allows(origin) {
            return Preflight::Refused(format!(
                "origin {} is not allowed",
                String::from_utf8_lossy(origin.as_bytes())
            ));
        }
        let requested = request
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        match requested {
            Some(method) if self.methods.contains(&method) => {}
            _ => {
                return Preflight::Refused(format!(
                    "method {} is not allowed from other origins (allowed: {})",
                    request
                        .get(ACCESS_CONTROL_REQUEST_METHOD)
                        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                        .unwrap_or_default(),
                    self.allow_methods.to_str().unwrap_or_default()
                ))
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        let allow_headers = match &self.allow_headers {
            Some(configured) => Some(configured.clone()),
            None => request.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
        };
        if let Some(allow_headers) = allow_headers {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        }
        headers.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.append(VARY, HeaderValue::from_static("Origin"));
        Preflight::Allowed(headers)
    }

    /// Marks the answer to a request from `origin` (nothing for an origin not allowed: the browser
    /// then keeps the answer from the page).
    pub(crate) fn decorate(&self, origin: &HeaderValue, response: &mut HeaderMap) {
        if !self.allows(origin) {
            return;
        }
        response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        if let Some(expose) = &self.expose_headers {
            response.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        if self.credentials {
            response.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if !self.any_origin || self.credentials {
            response.append(VARY, HeaderValue::from_static("Origin"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        let config = CorsConfig {
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
            allow_credentials: credentials,
            expose_headers: vec!["X-Total".into()],
            ..CorsConfig::default()
        };
        Cors::new(&config).unwrap().unwrap()
    }

    fn request(origin: &str, method: &str, headers: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        map.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).unwrap(),
        );
        if let Some(headers) = headers {
            map.insert(
                ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(headers).unwrap(),
            );
        }
        map
    }

    #[test]
    fn off_without_origins() {
        assert!(Cors::new(&CorsConfig::default()).unwrap().is_none());
        let bad = CorsConfig {
            allow_origins: vec!["*".into()],
            allow_methods: vec!["GE T".into()],
            ..CorsConfig::default()
        };
        assert!(Cors::new(&bad).is_err());
    }

    #[test]
    fn preflights_of_allowed_origins_and_methods_are_answered() {
        let cors = cors(&["https://app.example"], true);
        let Preflight::Allowed(headers) = cors.preflight(&request(
            "https://app.example",
            "PUT",
            Some("authorization, content-type"),
        )) else {
            panic!("refused");
        };
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert!(headers[ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("PUT"));
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, content-type"
        );
        assert_eq!(headers[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[VARY], "Origin");
        assert!(matches!(
            cors.preflight(&request("https://evil.example", "GET", None)),
            Preflight::Refused(reason) if reason.contains("evil")
        ));
        assert!(matches!(
            cors.preflight(&request("https://app.example", "TRACE", None)),
            Preflight::Refused(reason) if reason.contains("TRACE")
        ));
    }

    #[test]
    fn answers_are_marked_for_allowed_origins_only() {
        let any = cors(&["*"], false);
        let mut headers = HeaderMap::new();
        any.decorate(&HeaderValue::from_static("https://x.example"), &mut headers);
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(headers[ACCESS_CONTROL_EXPOSE_HEADERS], "X-Total");
        assert!(!headers.contains_key(VARY));
        // With credentials, `*` is not accepted by browsers: the origin is echoed.
        let any = cors(&["*"], true);
        let mut headers = HeaderMap::new();
        any.decorate(&HeaderValue::from_static("https://x.example"), &mut headers);
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://x.example");
        assert_eq!(headers[VARY], "Origin");
        let one = cors(&["https://app.example/"], false);
        let mut headers = HeaderMap::new();
        one.decorate(&HeaderValue::from_static("https://x.example"), &mut headers);
        assert!(headers.is_empty());
        one.decorate(
            &HeaderValue::from_static("https://APP.example"),
            &mut headers,
        );
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://APP.example");
    }
}
