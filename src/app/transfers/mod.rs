//! Running reassignment jobs ([`engine`]), delivering their WeCom calls ([`deliver`]) and
//! following staff departures ([`departures`]). Jobs and items are the domain's
//! ([`crate::domain::transfers`]).

pub mod deliver;
pub mod departures;
pub mod engine;
