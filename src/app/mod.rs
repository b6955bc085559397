//! What reacts and runs: the inbox [`events`] handler, [`sync`] with WeCom, [`outbox_delivery`]
//! (the only part that turns intents into WeCom calls), the chat-archive pull
//! ([`archive_pull`]), alert [`rescan`]s and the reassignment engine ([`transfers`]).

pub mod archive_pull;
pub mod events;
pub mod outbox_delivery;
pub mod rescan;
pub mod sync;
pub mod transfers;
pub mod wecom_records;
