//! The integration tests, one binary: a module per area, sharing one harness (`common`,
//! `emulated`) and one link of the dependency tree.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/emulated.rs"]
mod emulated;
#[path = "../common/web_client.rs"]
mod web_client;
#[path = "../common/webdriver.rs"]
mod webdriver;

mod alerts;
mod api_docs;
mod archive;
mod backup;
mod callback;
mod cli;
mod cli_record;
mod console;
mod console_members;
mod console_rules;
mod contacts;
mod coord;
mod demo;
mod deploy;
mod durability;
mod followup;
mod hardening;
mod instances;
mod layers;
mod processes;
mod quick_replies;
mod record;
mod roles;
mod rules;
mod sidebar;
mod store;
mod sync;
mod transfers;
mod upgrade;
mod worker;
