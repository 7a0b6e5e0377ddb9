//! The Mixer V2 pipeline core: no I/O, no clock, no threads of its own.
//!
//! Per request: ingested attributes ([`mixer_attr::Bag`]) -> transform (rules and instances
//! compiled from config into a [`Snapshot`]) -> dispatch to adapters ([`adapter`]). The host
//! supplies time, timers and callouts through the platform abstraction layer ([`pal`]). A proxy
//! embeds one [`Pipeline`] and one [`Worker`] per worker thread.
#![forbid(unsafe_code)]

pub mod adapter;
pub mod apa;
pub mod audit;
pub mod cache;
pub mod config_builder;
pub mod counter;
pub mod decision;
pub mod dispatch;
pub mod instance;
pub mod mutation;
pub mod pal;
pub mod pending;
pub mod pipeline;
mod report_keys;
pub mod report_plan;
pub mod report_queue;
mod report_record;
pub mod retry;
pub mod snapshot;
pub mod status;
pub mod template;

pub use adapter::{Adapter, AdapterRegistry, CheckResult, Handler};
pub use decision::{Decision, DirectResponse};
pub use pipeline::{
    CheckAnswer, CheckHandle, CheckStart, Pipeline, PipelineOptions, QuotaRequest, ReportSummary,
    Worker,
};
pub use snapshot::{CompileOptions, Config, ConfigError, ConfigErrors, Snapshot, compile};
pub use status::{Code, Status};
