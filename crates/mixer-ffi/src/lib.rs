//! Mixer V2 as one static library for Envoy (and an rlib for Rust tests and benches).
//!
//! The C++ API is the cxx bridge in [`bridge`] (generated header `include/mixer/bridge.rs.h`,
//! host interfaces in `include/mixer/host.h`, entry header `include/mixer/mixer.h`):
//!
//! - `create_pipeline(yaml, main_dispatcher)` / `swap_config` / `flush` / `create_worker`;
//! - `check(worker, request, callback)`: answered now (`Done`) or later through the callback
//!   on the worker thread (`Pending`, cancel with `cancel_check`);
//! - `report`; `mutate` (one whole request body) and `mutation_stream` / `mutation_state` /
//!   `mutation_push` / `mutation_finish` (a request or response body in chunks);
//! - `run_task`, `http_complete`, `http_fail`: how the host hands back work and callouts.
//!
//! The PAL is the host's `mixer::HostDispatcher` (C++ abstract class) behind
//! [`host::CxxDispatcher`]. No panic crosses the bridge: every entry point runs inside
//! `catch_unwind` and returns an INTERNAL status instead; no signature returns `Result`, so cxx
//! never throws a C++ exception.

pub mod api;
pub mod bridge;
pub mod host;
pub mod httpauthz;
pub mod mutation;

pub use api::{
    HeaderMap, Pipeline, Worker, check_result, connection, registry, request_attributes,
};
pub use bridge::ffi;
/// The cxx version the bridge was generated with (for `UniquePtr::null()` in Rust callers).
pub use cxx;
