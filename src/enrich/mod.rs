//! Adds identity (service, namespace, container) and the route to a `Request`.

pub(crate) mod routes;

use std::sync::Arc;

use crate::collect::Request;

// Selection decides who a process is; enrichment only attaches it to requests.
pub(crate) use crate::select::Identity;

/// A request ready for export.
#[derive(Debug, Clone)]
pub(crate) struct EnrichedRequest {
    pub request: Request,
    pub identity: Arc<Identity>,
    pub route: String,
}
