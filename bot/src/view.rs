//! The neutral review view: what a reviewer must see about a request,
//! whatever the door.

use crate::core::StoredRequest;

/// What every chat shows for a request.
#[derive(Debug, Clone)]
pub struct ReviewView {
    pub request: StoredRequest,
    pub base_url: String,
}

impl ReviewView {
    pub fn of(r: &StoredRequest, base_url: &str) -> ReviewView {
        ReviewView {
            request: r.clone(),
            base_url: base_url.to_string(),
        }
    }
}
