//! Follow-up notes (跟进记录), reminders and lifecycle stages.

use super::Endpoint;

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    Vec::new()
}
