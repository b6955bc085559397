//! Customers and their relations: the record, corp tags per relation, remark and description.

use super::Endpoint;

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    Vec::new()
}
