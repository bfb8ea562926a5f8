//! groupwatch: WeCom customer-group change callbacks in, trustworthy member events out.
//!
//! The flow, module by module:
//! `http` (accept loop) → `callback` (HTTP in) → `crypto` / `event` (verify, decrypt, parse) →
//! `inbound` (durable hand-off to RabbitMQ, sharded by chat) → `worker` (per-chat actors) →
//! `pipeline` (fetch via `provider`, reconcile, `diff`) → `publish` (AMQP out). `broker` owns
//! the one AMQP connection, `store` keeps the last snapshot of each group, `config` is loaded
//! once at start-up, `model` is the provider-neutral core. `sim` stands in for the WeCom API in
//! tests and `demo`.

pub mod app;
pub mod broker;
pub mod callback;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod diff;
pub mod event;
pub mod http;
pub mod inbound;
pub mod model;
pub mod pipeline;
pub mod provider;
pub mod publish;
pub mod replay;
pub mod resync;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod worker;
