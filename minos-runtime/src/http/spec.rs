//! The service's API descriptions, built from its route table and its models: OpenAPI 3.1 for the
//! REST routes, AsyncAPI 3.0 for the broker channels. Bodies are described by JSON Schemas (schemars):
//! the fields of the `#[root_entity]` types, and the `request = T` / `response = T` of `#[enroute]`.

use std::collections::BTreeSet;

use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::domain::ModelKind;
use crate::messaging::topics;
use crate::registry::ModelRegistration;
use crate::routing::{BrokerKind, Route, RouteEntry, RouteTable};
use crate::transaction::TransactionCommand;

/// A generator whose named schemas go to `components.schemas` of the document.
fn generator(settings: SchemaSettings) -> SchemaGenerator {
    settings
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator()
}

/// What errors look like, on HTTP and in broker replies.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "an error: what went wrong (never internal details) and the HTTP-like status",
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
        "required": ["error", "status"],
    })
}

/// `base`, or `base` with a suffix when another schema has that name already.
fn free_key(map: &Map<String, Value>, base: &str) -> String {
    let mut key = base.to_owned();
    let mut n = 1;
    while map.contains_key(&key) {
        n += 1;
        key = format!("{base}{n}");
    }
    key
}

/// `GET /spec/openapi`: the REST routes as an OpenAPI 3.1 document (paths, methods, path parameters,
/// the handler of each, request and response bodies, errors, security).
pub(crate) fn openapi(name: &str, table: &RouteTable) -> Value {
    let mut generator = generator(SchemaSettings::draft2020_12());
    let mut paths = Map::new();
    let mut operation_ids = BTreeSet::new();
    for (method, path, entry) in table.rest_routes() {
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|param| json!({"name": param, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        // A handler with several REST routes is one function but needs an id per operation.
        let base = format!("{}::{}", entry.service, entry.function);
        let mut id = base.clone();
        let mut n = 1;
        while !operation_ids.insert(id.clone()) {
            n += 1;
            id = format!("{base}_{n}");
        }
        let mut success = json!({"description": "success"});
        if let Some(response) = entry.response {
            success["content"] = json!({"application/json": {"schema": response(&mut generator)}});
        }
        let mut operation = json!({
            "operationId": id,
            "parameters": parameters,
            "responses": {
                "200": success,
                "default": {
                    "description": "an error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/minos.Error"}}},
                },
            },
        });
        if let Some(request) = entry.request {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": request(&mut generator)}},
            });
        }
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
    let mut schemas = generator.take_definitions(true);
    schemas.insert("minos.Error".into(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {"title": name, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    })
}

/// A channel id (and component key): the topic with anything but letters, digits, `.`, `-` and `_`
/// replaced, so it needs no escaping in a `$ref`.
fn channel_id(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A message of a channel: a title and the schema of its content (the envelope's `payload.content`).
struct Message {
    title: String,
    content: Value,
}

/// The AsyncAPI document being built.
struct AsyncApi {
    generator: SchemaGenerator,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
    /// Schemas of the domain events, added to the generator's after it is done.
    events: Map<String, Value>,
    models: Vec<&'static ModelRegistration>,
}

impl AsyncApi {
    /// Adds the channel of `topic` (once) with `message`, returns the channel id and the message key.
    fn channel(&mut self, topic: &str, message: Message) -> (String, String) {
        let id = channel_id(topic);
        self.add_channel(&id, Some(topic), message)
    }

    fn add_channel(
        &mut self,
        id: &str,
        address: Option<&str>,
        message: Message,
    ) -> (String, String) {
        let key = id.to_owned();
        self.messages.entry(key.clone()).or_insert_with(|| {
            json!({
                "name": key,
                "title": message.title,
                "contentType": "application/json",
                "payload": {"allOf": [
                    {"$ref": "#/components/schemas/minos.BrokerMessage"},
                    {"type": "object", "properties": {"payload": {"type": "object", "properties": {"content": message.content}}}},
                ]},
            })
        });
        let channel = self
            .channels
            .entry(id.to_owned())
            .or_insert_with(|| json!({"address": address, "messages": {}}));
        channel["messages"][&key] = json!({"$ref": format!("#/components/messages/{key}")});
        (id.to_owned(), key)
    }

    /// An operation on a channel; a `reply` makes it a request answered on the request's reply topic.
    fn operation(
        &mut self,
        action: &'static str,
        (channel, message): (String, String),
        summary: String,
        reply: Option<Message>,
    ) {
        let mut operation = json!({
            "action": action,
            "channel": {"$ref": format!("#/channels/{channel}")},
            "messages": [{"$ref": format!("#/channels/{channel}/messages/{message}")}],
            "summary": summary,
        });
        if let Some(reply) = reply {
            // The reply goes where the request says (the sender's `{service}.replies`): no fixed address.
            let (reply_channel, reply_message) =
                self.add_channel(&format!("{channel}.reply"), None, reply);
            operation["reply"] = json!({
                "address": {
                    "description": "the request's `reply_topic`",
                    "location": "$message.payload#/reply_topic",
                },
                "channel": {"$ref": format!("#/channels/{reply_channel}")},
                "messages": [{"$ref": format!("#/channels/{reply_channel}/messages/{reply_message}")}],
            });
        }
        let id = free_key(&self.operations, &format!("{action}.{channel}"));
        self.operations.insert(id, operation);
    }

    /// The content of a reply: the response on success (status 200), an error otherwise.
    fn reply(title: String, response: Value) -> Message {
        Message {
            title,
            content: json!({"anyOf": [response, {"$ref": "#/components/schemas/minos.Error"}]}),
        }
    }

    /// The content of domain event `topic` of a model of this binary (`FooCreated`, `FooUpdated`,
    /// `FooUpdated.bar`, `FooUpdated.items.create`, `FooDeleted`), if it is one.
    fn domain_event(&mut self, topic: &str) -> Option<Value> {
        let (head, rest) = match topic.split_once('.') {
            Some((head, rest)) => (head, Some(rest)),
            None => (topic, None),
        };
        for (suffix, action) in [
            ("Created", "create"),
            ("Updated", "update"),
            ("Deleted", "delete"),
        ] {
            let Some(name) = head.strip_suffix(suffix) else {
                continue;
            };
            let Some(model) = self.models.iter().copied().find(|m| {
                m.name == name
                    && matches!(m.kind, ModelKind::RootEntity | ModelKind::ExternalEntity)
            }) else {
                continue;
            };
            if rest.is_some() && action != "update" {
                return None;
            }
            return self.event_schema(model, action, rest);
        }
        None
    }

    /// The schema of an event of `model` (registered under the topic's name in `components.schemas`),
    /// as a `$ref`. `single` is the field (and member action) of a decomposed update.
    fn event_schema(
        &mut self,
        model: &'static ModelRegistration,
        action: &str,
        single: Option<&str>,
    ) -> Option<Value> {
        let key = match (action, single) {
            ("create", _) => format!("{}Created", model.name),
            ("delete", _) => format!("{}Deleted", model.name),
            (_, None) => format!("{}Updated", model.name),
            (_, Some(field)) => format!("{}Updated.{field}", model.name),
        };
        // Type names have no dots: the event schemas cannot take the name of a user's type.
        let key = format!("{}.event", channel_id(&key));
        if self.events.contains_key(&key) {
            return Some(json!({"$ref": format!("#/components/schemas/{key}")}));
        }
        let fields = (model.schema)(&mut self.generator);
        let property = |name: &str| {
            fields
                .get("properties")
                .and_then(|p| p.get(name))
                .cloned()
                .unwrap_or_else(|| json!({}))
        };
        // A whole-value diff of a field, or an incremental one of a member of a set.
        let diff = |field: &crate::registry::FieldSpec, member_action: Option<&str>| {
            let schema = property(field.name);
            let (value, action) = match member_action {
                None => (schema, None),
                Some(a) => (
                    schema.get("items").cloned().unwrap_or_else(|| json!({})),
                    Some(a),
                ),
            };
            let mut diff = json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "const": field.name},
                    "type": {"type": "string", "description": format!("the field's declared type: `{}`", field.type_name)},
                    "value": value,
                },
                "required": ["name", "type", "value"],
            });
            if let Some(action) = action {
                diff["properties"]["action"] = json!({"type": "string", "const": action});
                diff["required"] = json!(["name", "type", "value", "action"]);
            }
            diff
        };
        let mut items = Vec::new();
        let mut bounds = (None, None);
        match (action, single) {
            ("create", _) => items.extend(model.fields.iter().map(|f| diff(f, None))),
            ("delete", _) => bounds = (None, Some(0)),
            (_, None) => {
                for field in model.fields {
                    if field.set_actions.is_empty() {
                        items.push(diff(field, None));
                    } else {
                        items.extend(
                            field
                                .set_actions
                                .iter()
                                .map(|a| diff(field, Some(a.as_str()))),
                        );
                    }
                }
            }
            (_, Some(single)) => {
                let (name, member) = match single.split_once('.') {
                    Some((name, member)) => (name, Some(member)),
                    None => (single, None),
                };
                let field = model.fields.iter().find(|f| f.name == name)?;
                match member {
                    None if field.set_actions.is_empty() => {}
                    Some(member) if field.set_actions.iter().any(|a| a.as_str() == member) => {}
                    _ => return None,
                }
                items.push(diff(field, member));
                bounds = (Some(1), Some(1));
            }
        }
        let mut list = json!({"type": "array"});
        match items.len() {
            0 => list["maxItems"] = json!(0),
            1 => list["items"] = items.remove(0),
            _ => list["items"] = json!({"oneOf": items}),
        }
        if let Some(min) = bounds.0 {
            list["minItems"] = json!(min);
        }
        if let Some(max) = bounds.1 {
            list["maxItems"] = json!(max);
        }
        let description = match (action, single) {
            ("create", _) => format!("a {} was created: every field", model.name),
            ("delete", _) => format!("a {} was deleted", model.name),
            (_, None) => format!("a {} was updated: the changed fields", model.name),
            (_, Some(field)) => format!(
                "a {} was updated: its `{field}` (one of the fields of the `{}Updated` event with the same version)",
                model.name, model.name
            ),
        };
        let schema = json!({
            "type": "object",
            "description": description,
            "properties": {
                "uuid": {"type": "string", "format": "uuid"},
                "name": {"type": "string", "const": model.name},
                "version": {"type": "integer", "minimum": 1},
                "action": {"type": "string", "const": action},
                "created_at": {"type": "string", "format": "date-time"},
                "fields_diff": list,
            },
            "required": ["uuid", "name", "version", "action", "created_at", "fields_diff"],
        });
        self.events.insert(key.clone(), schema);
        Some(json!({"$ref": format!("#/components/schemas/{key}")}))
    }

    /// The topics the domain events of `model` are published to.
    fn event_topics(model: &ModelRegistration) -> Vec<String> {
        let mut out = vec![
            format!("{}Created", model.name),
            format!("{}Updated", model.name),
        ];
        for field in model.fields {
            if field.set_actions.is_empty() {
                out.push(format!("{}Updated.{}", model.name, field.name));
            }
            for action in field.set_actions {
                out.push(format!(
                    "{}Updated.{}.{}",
                    model.name,
                    field.name,
                    action.as_str()
                ));
            }
        }
        out.push(format!("{}Deleted", model.name));
        out
    }
}

/// The schema of a request's or response's content, `{}` (any) when the handler names no type.
fn body(schema: Option<crate::schema::SchemaFn>, generator: &mut SchemaGenerator) -> Value {
    schema.map_or_else(|| json!({}), |f| f(generator).to_value())
}

/// `GET /spec/asyncapi`: the broker channels as an AsyncAPI 3.0 document: the commands and queries the
/// service answers (with their replies), the events it subscribes to, the domain events of the root
/// entities it owns (`owned`), and the runtime's own topics.
pub(crate) fn asyncapi(name: &str, table: &RouteTable, owned: &[&'static str]) -> Value {
    let mut doc = AsyncApi {
        generator: generator(SchemaSettings::draft07()),
        channels: Map::new(),
        operations: Map::new(),
        messages: Map::new(),
        events: Map::new(),
        models: crate::registry::models(),
    };
    // Requests first: one handler per topic, its types give the content and the reply.
    let mut handled: Vec<(&str, BrokerKind, Vec<&RouteEntry>)> = Vec::new();
    for entry in table.entries() {
        if let Route::Broker { kind, topic } = entry.route {
            match handled.iter_mut().find(|(t, _, _)| *t == topic) {
                Some((_, _, entries)) => entries.push(entry),
                None => handled.push((topic, kind, vec![entry])),
            }
        }
    }
    for (topic, kind, entries) in handled {
        let handlers = entries
            .iter()
            .map(|e| format!("{}::{}", e.service, e.function))
            .collect::<Vec<_>>()
            .join(", ");
        if kind == BrokerKind::Event {
            let content = doc.domain_event(topic).unwrap_or_else(|| json!({}));
            let channel = doc.channel(
                topic,
                Message {
                    title: format!("event {topic}"),
                    content,
                },
            );
            doc.operation("receive", channel, format!("handled by {handlers}"), None);
        } else {
            let entry = entries[0];
            let content = body(entry.request, &mut doc.generator);
            let response = body(entry.response, &mut doc.generator);
            let reply = AsyncApi::reply(format!("reply to {topic}"), response);
            let what = if kind == BrokerKind::Command {
                "command"
            } else {
                "query"
            };
            let channel = doc.channel(
                topic,
                Message {
                    title: format!("{what} {topic}"),
                    content,
                },
            );
            doc.operation(
                "receive",
                channel,
                format!("{what} answered by {handlers}"),
                Some(reply),
            );
        }
    }
    // The domain events this service publishes when it commits changes of its root entities.
    for model in doc.models.clone() {
        if model.kind != ModelKind::RootEntity || !owned.contains(&model.name) {
            continue;
        }
        for topic in AsyncApi::event_topics(model) {
            let content = doc.domain_event(&topic).unwrap_or_else(|| json!({}));
            let channel = doc.channel(
                &topic,
                Message {
                    title: format!("event {topic}"),
                    content,
                },
            );
            doc.operation(
                "send",
                channel,
                format!("published when a {} change commits", model.name),
                None,
            );
        }
        // Other services resolve references and build views from these.
        let stored = (model.schema)(&mut doc.generator).to_value();
        let snapshot = json!({"allOf": [stored, {"type": "object", "properties": {
            "uuid": {"type": "string", "format": "uuid"}, "version": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
        }}]});
        let snapshots = topics::snapshots(model.name);
        let reply = AsyncApi::reply(
            format!("the {} snapshots asked for", model.name),
            json!({"type": "array", "items": snapshot}),
        );
        let channel = doc.channel(
            &snapshots,
            Message {
                title: format!("query {snapshots}"),
                content: json!({"type": "object", "properties": {"uuids": {"type": "array", "items": {"type": "string", "format": "uuid"}}}, "required": ["uuids"]}),
            },
        );
        doc.operation(
            "receive",
            channel,
            format!(
                "the snapshots of {} uuids (reference resolution)",
                model.name
            ),
            Some(reply),
        );
        let events = topics::events(model.name);
        let reply = AsyncApi::reply(format!("a page of the {} events", model.name), json!({}));
        let channel = doc.channel(
            &events,
            Message {
                title: format!("query {events}"),
                content: json!({"type": "object", "properties": {
                    "after": {"type": "string", "description": "the position after which to read: `COMMIT.ID`"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "count": {"type": "boolean"},
                }}),
            },
        );
        doc.operation(
            "receive",
            channel,
            format!(
                "the {} events in commit order (views of other services)",
                model.name
            ),
            Some(reply),
        );
    }
    // The runtime's own topics.
    for command in TransactionCommand::ALL {
        let topic = topics::transaction_command(command, name);
        let reply = AsyncApi::reply(
            format!("the transaction's status after {}", command.as_str()),
            json!({"type": "object", "properties": {"uuid": {"type": "string", "format": "uuid"}, "status": {"type": "string"}}}),
        );
        let channel = doc.channel(
            &topic,
            Message {
                title: format!("command {topic}"),
                content: json!({"description": "the transaction's uuid"}),
            },
        );
        doc.operation(
            "receive",
            channel,
            format!(
                "{} a saga's transaction in this service",
                command.as_str().to_lowercase()
            ),
            Some(reply),
        );
    }
    for (topic, action, summary) in [
        (
            topics::saga_reply(name),
            "receive",
            "the replies to the remote steps of this service's sagas",
        ),
        (
            topics::client_replies(name),
            "receive",
            "the replies to the commands and queries this service sends",
        ),
        (
            topics::dead_letter(name),
            "send",
            "the messages this service failed to handle",
        ),
    ] {
        let channel = doc.channel(
            &topic,
            Message {
                title: topic.clone(),
                content: json!({}),
            },
        );
        doc.operation(action, channel, summary.to_owned(), None);
    }

    let mut schemas = doc.generator.take_definitions(true);
    schemas.append(&mut doc.events);
    schemas.insert("minos.Error".into(), error_schema());
    schemas.insert("minos.BrokerMessage".into(), broker_message_schema());
    let mut transforms = doc.generator;
    for value in schemas.values_mut().chain(
        doc.messages
            .values_mut()
            .filter_map(|m| m.get_mut("payload")),
    ) {
        if let Ok(mut schema) = Schema::try_from(value.take()) {
            for transform in transforms.transforms_mut() {
                transform.transform(&mut schema);
            }
            *value = schema.to_value();
        }
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {"title": name, "version": "1"},
        "defaultContentType": "application/json",
        "channels": doc.channels,
        "operations": doc.operations,
        "components": {"messages": doc.messages, "schemas": schemas},
    })
}

/// The envelope every message travels in (the wire format): the content is in `payload.content`.
fn broker_message_schema() -> Value {
    json!({
        "type": "object",
        "description": "the minos message envelope",
        "properties": {
            "version": {"type": "integer", "const": crate::messaging::WIRE_VERSION},
            "topic": {"type": "string"},
            "identifier": {"type": "string", "format": "uuid", "description": "unique; a reply carries its request's"},
            "reply_topic": {"type": "string", "description": "where the reply goes, when one is wanted"},
            "strategy": {"type": "string", "enum": ["unicast", "multicast"]},
            "payload": {
                "type": "object",
                "properties": {
                    "content": {},
                    "status": {"type": "integer", "description": "200 success, 400 error of the request, 500 failure of the service"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "required": ["content"],
            },
        },
        "required": ["topic", "identifier", "payload"],
    })
}
