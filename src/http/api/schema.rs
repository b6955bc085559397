//! JSON Schema fragments for the OpenAPI document.

use serde_json::{Value, json};

/// A string.
pub fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

/// An integer (epoch ms, ids, counts).
pub fn int(description: &str) -> Value {
    json!({"type": "integer", "format": "int64", "description": description})
}

/// A boolean.
pub fn boolean(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

/// One of fixed strings.
pub fn one_of(values: &[&str], description: &str) -> Value {
    json!({"type": "string", "enum": values, "description": description})
}

/// `schema` or null.
pub fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

/// An array of `items`.
pub fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// An object with `properties`; `required` names the mandatory ones.
pub fn object(properties: &[(&str, Value)], required: &[&str]) -> Value {
    let props: serde_json::Map<String, Value> = properties
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    json!({"type": "object", "properties": props, "required": required})
}

/// The error body every failure carries.
pub fn error() -> Value {
    object(
        &[
            (
                "code",
                one_of(
                    &[
                        "unauthenticated",
                        "forbidden",
                        "not_found",
                        "invalid",
                        "conflict",
                        "unavailable",
                        "timeout",
                        "rate_limited",
                    ],
                    "机器可读的错误码",
                ),
            ),
            ("message", string("给人看的说明")),
            ("field", string("出错的字段（仅 invalid）")),
            ("reason", string("字段错在哪里（仅 invalid）")),
        ],
        &["code", "message"],
    )
}

/// An outbox item reference in a 202 answer.
pub fn accepted(extra: &[(&str, Value)]) -> Value {
    let mut props = vec![(
        "outbox_id",
        nullable(int(
            "发往企业微信的变更（outbox 条目），GET /api/v1/outbox/{id} 查看进度",
        )),
    )];
    props.extend(extra.iter().cloned());
    object(&props, &["outbox_id"])
}
