//! Built-in adapters that run in process.
//!
//! - [`denier`]: always denies with a configured status (templates `checknothing`, `listentry`,
//!   `quota`).
//! - [`listchecker`]: white/black lists of strings, regexes, IP addresses and CIDR ranges,
//!   static or fetched from a provider URL.
//! - [`memquota`]: in-process rate limits (fixed or rolling windows, overrides, deduplication).
//! - [`redisquota`]: rate limits shared across proxies through Redis (Mixer's redisquota).
//! - [`rbac`]: role-based access control over the `authorization` template.
//! - [`prometheus`]: `metric` instances as Prometheus counters, gauges and histograms, rendered
//!   in the Prometheus text format or OpenMetrics for the host to serve.
//! - [`stdio`]: writes `logentry` instances as text or JSON lines to stdout, stderr or a file.
//! - [`tracing`]: `tracespan` instances as spans, batched and POSTed as Zipkin v2 JSON or OTLP/HTTP protobuf.
//!
//! [`registry`] returns an [`AdapterRegistry`] with every adapter of this crate.
#![forbid(unsafe_code)]

pub mod denier;
mod duration_param;
pub mod listchecker;
pub mod memquota;
pub mod prometheus;
pub mod rbac;
pub mod redisquota;
pub mod stdio;
pub mod tracing;

use std::sync::Arc;

use mixer_core::AdapterRegistry;

/// A registry with every built-in adapter.
pub fn registry() -> AdapterRegistry {
    let mut r = AdapterRegistry::new();
    r.register(Arc::new(denier::DenierAdapter));
    r.register(Arc::new(listchecker::ListCheckerAdapter));
    r.register(Arc::new(memquota::MemQuotaAdapter));
    r.register(Arc::new(prometheus::PrometheusAdapter::default()));
    r.register(Arc::new(rbac::RbacAdapter));
    r.register(Arc::new(redisquota::RedisQuotaAdapter::new()));
    r.register(Arc::new(stdio::StdioAdapter::default()));
    r.register(Arc::new(tracing::TracingAdapter));
    r
}
