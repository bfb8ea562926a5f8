//! The published event's JSON Schema (`schema/event.schema.json`), compiled for tests.
//!
//! Any test file can `mod schema_support;` and check every event it receives:
//!
//! ```ignore
//! mod schema_support;
//! let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
//! schema_support::assert_valid_event(&body);
//! ```
#![allow(dead_code)]

use serde_json::Value;
use std::sync::OnceLock;

/// The schema text, embedded at compile time so that editing it rebuilds the tests.
pub const EVENT_SCHEMA: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/event.schema.json"));

/// The schema as JSON.
pub fn event_schema_json() -> Value {
    serde_json::from_str(EVENT_SCHEMA).expect("schema/event.schema.json is JSON")
}

/// A fresh validator for the event schema (draft 2020-12, `format` keywords asserted).
pub fn event_schema() -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&event_schema_json())
        .unwrap_or_else(|e| panic!("schema/event.schema.json does not compile: {e}"))
}

/// One validator shared by the whole test binary.
pub fn shared_event_schema() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(event_schema)
}

/// Every way `event` breaks the schema, one line each (`/path: message`); empty when valid.
pub fn event_errors(event: &Value) -> Vec<String> {
    shared_event_schema().iter_errors(event).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

/// Panics, naming every violation and showing the event, unless `event` matches the schema.
pub fn assert_valid_event(event: &Value) {
    let errors = event_errors(event);
    assert!(errors.is_empty(), "event does not match schema/event.schema.json:\n  {}\n{event:#}", errors.join("\n  "));
}
