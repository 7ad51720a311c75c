//! What a service instance tells the registry about itself, read from the original registry's JSON so
//! that minos-python services register too, with an error naming each problem.

use serde_json::{json, Map, Value};

use super::PathTemplate;

/// One REST endpoint of a service: a method and a path template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The HTTP method, upper case.
    pub method: String,
    /// The path template.
    pub path: PathTemplate,
    /// What a caller needs (`{"auth": true, "roles": [..]}` as the pair's third element).
    pub requirement: crate::auth::Requirement,
}

/// A service instance as registered: `POST /microservices/{name}` with
/// `{"address", "port", "endpoints": [["GET", "/foos/{uuid}"], ...], "status"?}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The service's name (from the URL).
    pub name: String,
    /// Where it listens: a host name or IP address.
    pub address: String,
    /// Its HTTP port.
    pub port: u16,
    /// The REST endpoints it serves.
    pub endpoints: Vec<Endpoint>,
    /// Whether it declared itself able to serve (`true` when absent).
    pub status: bool,
}

/// Why a registration was refused: each a 400 for the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The body is empty or not a JSON object.
    #[error("the body must be a JSON object: {{\"address\", \"port\", \"endpoints\": [[\"GET\", \"/path\"], ...]}}")]
    NotAnObject,
    /// A required key is missing.
    #[error("`{0}` is missing: a registration needs `address`, `port` and `endpoints`")]
    Missing(&'static str),
    /// A key has a value of the wrong shape.
    #[error("`{key}` {expected}")]
    Invalid {
        /// The key.
        key: String,
        /// What it should be.
        expected: String,
    },
    /// A path template is malformed.
    #[error("endpoint path `{path}`: {reason}")]
    InvalidPath {
        /// The path as sent.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Registration {
    /// Reads a registration of service `name` from a request body.
    pub fn from_json(name: &str, body: &Value) -> Result<Self, RegistrationError> {
        let object = body.as_object().ok_or(RegistrationError::NotAnObject)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let address = match object.get("address") {
            None | Some(Value::Null) => return Err(RegistrationError::Missing("address")),
            Some(Value::String(address)) if !address.trim().is_empty() => address.trim().to_owned(),
            Some(_) => return Err(invalid("address", "must be a host name or an IP address")),
        };
        let port = port(object)?;
        let endpoints = match object.get("endpoints") {
            None | Some(Value::Null) => return Err(RegistrationError::Missing("endpoints")),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| endpoint(i, item))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(invalid(
                    "endpoints",
                    "must be a list of [method, path] pairs",
                ))
            }
        };
        let status = match object.get("status") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(status)) => *status,
            Some(_) => return Err(invalid("status", "must be true or false")),
        };
        Ok(Registration {
            name: name.to_owned(),
            address,
            port,
            endpoints,
            status,
        })
    }

    /// The JSON the original registry answers for a service:
    /// `{"name", "address", "port", "endpoints": [["GET", "/foos/{uuid}"], ...], "status"}`.
    pub fn to_json(&self) -> Value {
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| match e.requirement.to_json() {
                Some(requirement) => json!([e.method, e.path.as_str(), requirement]),
                None => json!([e.method, e.path.as_str()]),
            })
            .collect();
        json!({
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "endpoints": endpoints,
            "status": self.status,
        })
    }
}

fn invalid(key: &str, expected: &str) -> RegistrationError {
    RegistrationError::Invalid {
        key: key.to_owned(),
        expected: expected.to_owned(),
    }
}

/// The port, as a number or a numeric string (minos-python sends what its configuration holds).
fn port(object: &Map<String, Value>) -> Result<u16, RegistrationError> {
    let expected = "must be a port number from 1 to 65535";
    let number = match object.get("port") {
        None | Some(Value::Null) => return Err(RegistrationError::Missing("port")),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(text)) => text.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match number {
        Some(port @ 1..=65535) => Ok(port as u16),
        _ => Err(invalid("port", expected)),
    }
}

/// One endpoint: `["GET", "/foos/{uuid}"]`, or `{"method": "GET", "path": "/foos/{uuid}"}` (`url` is
/// read as `path`), with the route's requirement third (`["POST", "/foos", {"auth": true}]`) or as
/// `"auth"`/`"roles"` keys.
fn endpoint(index: usize, item: &Value) -> Result<Endpoint, RegistrationError> {
    let key = format!("endpoints[{index}]");
    let (method, path, requirement) = match item {
        Value::Array(pair) if pair.len() == 2 => (&pair[0], &pair[1], Value::Null),
        Value::Array(triple) if triple.len() == 3 && triple[2].is_object() => {
            (&triple[0], &triple[1], triple[2].clone())
        }
        Value::Object(object) => (
            object.get("method").unwrap_or(&Value::Null),
            object
                .get("path")
                .or_else(|| object.get("url"))
                .unwrap_or(&Value::Null),
            item.clone(),
        ),
        _ => {
            return Err(invalid(
                &key,
                "must be a [method, path] pair, like [\"GET\", \"/foos/{uuid}\"]",
            ))
        }
    };
    let method = match method {
        Value::String(method)
            if minos_rules::HTTP_METHODS.contains(&method.to_ascii_uppercase().as_str()) =>
        {
            method.to_ascii_uppercase()
        }
        _ => {
            return Err(invalid(
                &key,
                &format!(
                    "has no known HTTP method ({})",
                    minos_rules::HTTP_METHODS.join(", ")
                ),
            ))
        }
    };
    let path = match path {
        Value::String(path) => PathTemplate::parse(path)?,
        _ => return Err(invalid(&key, "has no path: a string like \"/foos/{uuid}\"")),
    };
    Ok(Endpoint {
        method,
        path,
        requirement: crate::auth::Requirement::from_json(&requirement),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_minos_python_sends() {
        let body = json!({"address": "56.56.56.56", "port": 56, "endpoints": [["POST", "/foo"], ["GET", "/bar/{id}"]]});
        let registration = Registration::from_json("foo", &body).unwrap();
        assert_eq!(registration.address, "56.56.56.56");
        assert_eq!(registration.port, 56);
        assert!(registration.status);
        assert_eq!(registration.endpoints[1].method, "GET");
        assert_eq!(registration.endpoints[1].path.as_str(), "/bar/{id}");
        assert_eq!(
            registration.to_json(),
            json!({"name": "foo", "address": "56.56.56.56", "port": 56, "status": true,
                   "endpoints": [["POST", "/foo"], ["GET", "/bar/{id}"]]})
        );
        // A port from an environment variable arrives as text; objects and lower-case methods are read.
        let body = json!({"address": "h", "port": "8080", "status": false,
                          "endpoints": [{"method": "get", "url": "/x"}]});
        let registration = Registration::from_json("foo", &body).unwrap();
        assert_eq!((registration.port, registration.status), (8080, false));
        assert_eq!(registration.endpoints[0].method, "GET");
        // A route's requirement travels third, and comes back as sent.
        let body = json!({"address": "h", "port": 1, "endpoints": [
            ["POST", "/foos", {"auth": true}], ["DELETE", "/foos/{id}", {"roles": ["admin"]}],
            {"method": "GET", "path": "/secret", "auth": true}]});
        let registration = Registration::from_json("foo", &body).unwrap();
        assert!(registration.endpoints[0].requirement.auth);
        assert_eq!(registration.endpoints[1].requirement.roles, ["admin"]);
        assert!(registration.endpoints[2].requirement.auth);
        assert_eq!(
            registration.to_json()["endpoints"][1],
            json!(["DELETE", "/foos/{id}", {"auth": true, "roles": ["admin"]}])
        );
    }

    #[test]
    fn every_problem_is_named() {
        let cases = [
            (json!(null), "JSON object"),
            (json!([]), "JSON object"),
            (json!({"port": 1, "endpoints": []}), "`address` is missing"),
            (
                json!({"address": "h", "endpoints": []}),
                "`port` is missing",
            ),
            (json!({"address": "h", "port": 1}), "`endpoints` is missing"),
            (
                json!({"address": "", "port": 1, "endpoints": []}),
                "`address`",
            ),
            (
                json!({"address": "h", "port": 0, "endpoints": []}),
                "`port`",
            ),
            (
                json!({"address": "h", "port": 70000, "endpoints": []}),
                "`port`",
            ),
            (
                json!({"address": "h", "port": "x", "endpoints": []}),
                "`port`",
            ),
            (
                json!({"address": "h", "port": 1, "endpoints": "GET /x"}),
                "`endpoints`",
            ),
            (
                json!({"address": "h", "port": 1, "endpoints": [["GET"]]}),
                "`endpoints[0]`",
            ),
            (
                json!({"address": "h", "port": 1, "endpoints": [["FETCH", "/x"]]}),
                "HTTP method",
            ),
            (
                json!({"address": "h", "port": 1, "endpoints": [["GET", "/x/{id"]]}),
                "/x/{id",
            ),
            (
                json!({"address": "h", "port": 1, "endpoints": [], "status": "up"}),
                "`status`",
            ),
        ];
        for (body, expected) in cases {
            let error = Registration::from_json("foo", &body)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
    }
}
