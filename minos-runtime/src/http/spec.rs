//! The service's API descriptions, built from its route table.

use serde_json::{json, Value};

use crate::routing::RouteTable;

/// `GET /spec/openapi`: the REST routes as an OpenAPI 3 document (paths, methods, path parameters,
/// the handler of each).
pub(crate) fn openapi(name: &str, table: &RouteTable) -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, entry) in table.rest_routes() {
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|param| json!({"name": param, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "operationId": format!("{}::{}", entry.service, entry.function),
            "parameters": parameters,
            "responses": {"200": {"description": "success"}, "default": {"description": "an error: {\"error\", \"status\"}"}},
        });
        // Routes declared `auth` or `roles` need a bearer token (the roles as the scheme's scopes).
        let requirement = entry.access.requirement("admin");
        if !requirement.is_open() {
            operation["security"] = json!([{"bearer": requirement.roles}]);
            operation["responses"]["401"] = json!({"description": "no valid access token"});
            if !requirement.roles.is_empty() {
                operation["responses"]["403"] =
                    json!({"description": "the token has none of the roles"});
            }
        }
        let item = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        if let Value::Object(item) = item {
            item.insert(method.to_ascii_lowercase(), operation);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": name, "version": "1"},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    })
}

/// `GET /spec/asyncapi`: the broker channels as an AsyncAPI 2 document (commands and queries it answers,
/// events it subscribes to).
pub(crate) fn asyncapi(name: &str, table: &RouteTable) -> Value {
    let mut channels = serde_json::Map::new();
    for entry in table.entries() {
        if let crate::routing::Route::Broker { kind, topic } = entry.route {
            channels.insert(
                topic.to_owned(),
                json!({"subscribe": {"operationId": format!("{}::{}", entry.service, entry.function), "description": format!("{kind:?}")}}),
            );
        }
    }
    json!({"asyncapi": "2.6.0", "info": {"title": name, "version": "1"}, "channels": channels})
}
