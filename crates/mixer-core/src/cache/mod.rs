//! Caches that keep backends off the request path: the check cache ([`check`]) and the quota
//! token cache with prefetch (later).

pub mod check;
mod key;

pub use check::{CacheStats, CheckCache, CheckCacheConfig, PreparedKey};
pub use key::{KeyShape, ShapeKey};
