//! The SCRM server, in layers whose dependencies point one way (a test in `tests/it/layers.rs`
//! keeps it so; `docs/architecture.md` draws the picture):
//!
//! - [`platform`]: storage, coordination, configuration, telemetry and the WeCom adapter;
//! - [`pipeline`]: the durable queues (inbox, outbox), their workers and the job table;
//! - [`auth`]: API keys, principals, the audit log;
//! - [`domain`]: what the product is about (customers, staff, tags, group chats, follow-up,
//!   alerts, the chat archive's records, reassignment); each concept owns its tables;
//! - [`app`]: what reacts and runs (the inbox event handler, sync, outbox delivery, the archive
//!   pull, rescans, the reassignment engine);
//! - the surfaces: [`http`], [`cli`] and [`startup`], which wires a server. `main.rs` only parses.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod cli;
pub mod domain;
pub mod http;
pub mod pipeline;
pub mod platform;
pub mod startup;

pub use startup::serve;
