//! Caches that keep backends off the request path: the check cache ([`check`]) and the quota
//! token cache with prefetch ([`quota`]).

pub mod check;
pub(crate) mod hashed;
pub(crate) mod key;
pub mod quota;

pub use check::{CacheStats, CheckCache, CheckCacheConfig, PreparedKey};
pub use hashed::PassThrough;
pub use key::{KeyShape, ShapeKey};
