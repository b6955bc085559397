//! The SCRM server: configuration, HTTP surfaces, the inbox and its workers, the domain modules
//! (customers and follow relations, staff, tags, group chats), sync, jobs, coordination and
//! storage. `main.rs` only wires.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod archive;
pub mod auth;
pub mod cli;
pub mod config;
pub mod contacts;
pub mod coord;
pub mod db;
pub mod events;
pub mod followup;
pub mod group_chats;
pub mod http;
pub mod inbox;
pub mod jobs;
pub mod outbox;
pub mod record;
pub mod scan;
pub mod staff;
pub mod startup;
pub mod sync;
pub mod tags;
pub mod telemetry;
pub mod transfers;
pub mod wecom;
pub mod worker;

pub use startup::serve;
