//! What the product is about. Each concept owns its tables (its SQL is in its own module and
//! nowhere else) and is called, never bypassed, by the others and by the layers above.

pub mod alerts;
pub mod archive;
pub mod customers;
pub mod followup;
pub mod group_chats;
pub mod quick_replies;
pub mod rule_book;
pub mod scan;
pub mod settings;
pub mod staff;
pub mod tags;
pub mod transfers;
