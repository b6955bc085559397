//! Compliance alerts: a staff member deleting customers (and many at once), customers leaving,
//! relations that vanished without an event, and content rules on messages from any source.
//!
//! Everything arrives as [`Trigger`] + evidence and goes through [`raise`]: one transaction that
//! stores the evidence once (a replayed event adds nothing), joins it to the open alert of the same
//! burst (staff member + trigger [+ rule] while `burst_window_secs` has not passed since its last
//! evidence) or opens a new one, escalates a deletion burst to a mass deletion past
//! `mass_deletion_count`, and writes the notifications into the outbox in the same transaction —
//! so an alert is never raised without its message, nor sent twice.
//!
//! Lifecycle: open → acknowledged → resolved | false_positive, and reopen; every change is kept
//! in `alert_event` with who, when and a comment.

use serde::Serialize;
use wecom_sdk::{CorpId, ExternalUserId, UserId};

use crate::domain::scan::{Hit, Severity};
use crate::pipeline::outbox::{self, Intent, Message};
use crate::platform::config::{AlertSettings, CorpConfig};
use crate::platform::db::{Db, StoreError, Tx};
use crate::{on_db, on_tx};

mod content;
mod model;
mod raise;
mod routing;
mod store;

pub use content::*;
pub use model::*;
pub use raise::*;
pub use routing::*;
pub use store::*;
