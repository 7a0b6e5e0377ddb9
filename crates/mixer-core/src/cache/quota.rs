//! The quota token cache with prefetch (being written).
