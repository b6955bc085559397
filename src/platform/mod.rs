//! What everything else stands on: the database ([`db`]), coordination between instances
//! ([`coord`]), configuration ([`config`]), logs and metrics ([`telemetry`]), the optional external judge of
//! borderline messages ([`judge`]) and the server's side
//! of the WeCom API ([`wecom`]). Nothing here knows a domain concept.

pub mod config;
pub mod coord;
pub mod db;
pub mod judge;
pub mod telemetry;
pub mod ticker;
pub mod wecom;
