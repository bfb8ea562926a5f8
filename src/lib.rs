//! groupwatch: WeCom customer-group change callbacks in, trustworthy member events out.
//!
//! The flow, module by module:
//! `callback` (HTTP in) → `crypto` / `event` (verify, decrypt, parse) → `inbound` (durable
//! hand-off to RabbitMQ) → … → `broker` (the one AMQP connection).
//! `config` is loaded once at start-up; `model` is the provider-neutral core; `store` keeps the
//! last snapshot of each group.

pub mod app;
pub mod broker;
pub mod callback;
pub mod config;
pub mod crypto;
pub mod event;
pub mod inbound;
pub mod model;
pub mod replay;
pub mod store;
pub mod telemetry;
