//! Adds identity (service, namespace, container) and the route to a `Request`.

pub mod routes;

use std::sync::Arc;

use crate::collect::Request;

/// Who served a request, as users name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Identity {
    pub service_name: String,
    pub service_namespace: String,
    /// Set for container targets only.
    pub container_name: Option<String>,
    /// More labels asked for in the configuration (`container_id`, `container_image`,
    /// `container_label_<name>`), already sanitised as Prometheus label names.
    pub extra: Vec<(&'static str, String)>,
}

/// A request ready for export.
#[derive(Debug, Clone)]
pub struct EnrichedRequest {
    pub request: Request,
    pub identity: Arc<Identity>,
    pub route: String,
}
