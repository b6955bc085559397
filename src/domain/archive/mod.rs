//! The chat archive's records: stored messages, undecryptable ones, media and the per-corp cursor
//! ([`store`]), reading them back ([`read`]) and the records exchanged with the archive worker ([`proto`]). The pull from
//! WeCom's library lives in [`crate::app::archive_pull`].

pub mod proto;
pub mod read;
pub mod store;
