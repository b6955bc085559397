//! The SCRM server: configuration, HTTP surfaces, the inbox and storage. `main.rs` only wires.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod db;
pub mod http;
pub mod inbox;
pub mod startup;
pub mod telemetry;

pub use startup::serve;
