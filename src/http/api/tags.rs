//! The corp tag library, personal tags and auto-tagging rules.

use super::Endpoint;

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    Vec::new()
}
