//! Built-in adapters that run in process.
//!
//! - [`denier`]: always denies with a configured status (templates `checknothing`, `listentry`,
//!   `quota`).
//! - [`listchecker`]: white/black lists of strings, regexes, IP addresses and CIDR ranges,
//!   static or fetched from a provider URL.
//! - [`memquota`]: in-process rate limits (fixed or rolling windows, overrides, deduplication).
//! - [`rbac`]: role-based access control over the `authorization` template.
//! - [`stdio`]: writes `logentry` instances as text or JSON lines to stdout, stderr or a file.
//!
//! [`registry`] returns an [`AdapterRegistry`] with every adapter of this crate.
#![forbid(unsafe_code)]

pub mod denier;
mod duration_param;
pub mod listchecker;
pub mod memquota;
pub mod rbac;
pub mod stdio;

use std::sync::Arc;

use mixer_core::AdapterRegistry;

/// A registry with every built-in adapter.
pub fn registry() -> AdapterRegistry {
    let mut r = AdapterRegistry::new();
    r.register(Arc::new(denier::DenierAdapter));
    r.register(Arc::new(listchecker::ListCheckerAdapter));
    r.register(Arc::new(memquota::MemQuotaAdapter));
    r.register(Arc::new(rbac::RbacAdapter));
    r.register(Arc::new(stdio::StdioAdapter::default()));
    r
}
