//! What reacts and runs: the inbox [`events`] handler, [`sync`] with WeCom, [`outbox_delivery`]
//! (the only part that turns intents into WeCom calls), the chat-archive pull
//! ([`archive_pull`]), alert [`rescan`]s, the reassignment engine ([`transfers`]), the callback
//! [`selftest`], the CSV [`export`] and the [`retention`] of old rows.

pub mod archive_pull;
pub mod events;
pub mod export;
pub mod outbox_delivery;
pub mod rescan;
pub mod retention;
pub mod selftest;
pub mod sync;
pub mod transfers;
pub mod wecom_records;
