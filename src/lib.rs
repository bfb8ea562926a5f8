//! groupwatch: chat-platform group-change notifications in, trustworthy member events out.
//!
//! The folders are the flow:
//! `ingress` (HTTP in) → `provider/<vendor>` (verify, decrypt, map to reports) → `queue`
//! (durable hand-off to RabbitMQ, sharded by chat) → `worker` (per-chat actors; the pipeline
//! fetches via `provider`, judges consistency and diffs with `core`) → `store` (snapshot and
//! outbox in one transaction) → `queue::publish` (AMQP out). `core` is provider-neutral and does
//! no I/O. `config` is loaded once at start-up; `app` wires everything; `sim` stands in for the
//! vendors' APIs in tests and `demo`; `tools` holds `replay` and `demo`.

pub mod api;
pub mod app;
pub mod config;
pub mod core;
pub mod ingress;
pub mod ops;
pub mod provider;
pub mod queue;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod worker;
