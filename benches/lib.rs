//! Shared helpers for the benchmarks (bench targets are declared in Cargo.toml).
