//! Compiled config snapshots: immutable, shared read-only by every worker thread.
//!
//! A [`Snapshot`] is what operator config (handlers, instances, rules, attribute manifests)
//! compiles to: the vocabulary, instances with compiled expressions, built handlers and rules
//! split by the stage they serve. [`compile`] builds one from the protobuf [`Config`]
//! (`mixer_proto::v2::Config`, which YAML loads into); a rejected config returns every error
//! found, each naming its object and field.

mod apa;
mod compile;
pub mod index;
mod params;
mod quota_spec;

use std::fmt;
use std::sync::Arc;

use mixer_attr::{AttrId, Vocabulary};
use mixer_expr::Expression;

use crate::adapter::Handler;
use crate::instance::CompiledInstance;

pub use apa::{ApaBinding, ApaChain, ApaStage};
pub use compile::{CompileOptions, compile};
pub use mixer_proto::v2::Config;
pub use params::{json_to_struct, struct_to_json};
pub use quota_spec::QuotaSpecs;

/// Where in the config a problem is: the object, the field, and (for YAML) the position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// `kind/namespace/name`, e.g. `rule/istio-system/denyreviewsv3`.
    pub object: String,
    /// The field, e.g. `match`, `actions[0].handler`, `params.dimensions.code`.
    pub field: String,
    pub message: String,
    /// 1-based line and column in the source file, filled in by front-ends that know them.
    pub location: Option<(String, u32, u32)>,
}

impl ConfigError {
    /// An error about `field` of `object` (`kind/namespace/name`).
    pub fn new(object: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            object: object.to_string(),
            field: field.into(),
            message: message.into(),
            location: None,
        }
    }

    /// The same error at `file:line:column`.
    pub fn at(mut self, file: impl Into<String>, line: u32, column: u32) -> Self {
        self.location = Some((file.into(), line, column));
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((file, line, col)) = &self.location {
            write!(f, "{file}:{line}:{col}: ")?;
        }
        write!(f, "{}: ", self.object)?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found in a rejected config.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// How long a backend may take when the handler's config does not say.
pub const DEFAULT_HANDLER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Per-handler failure policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// A failed backend allows the request (uncached).
    FailOpen,
    /// A failed backend denies the request.
    FailClose,
}

/// A built handler and its config.
pub struct HandlerEntry {
    /// `name.namespace`
    pub name: Arc<str>,
    pub adapter: &'static str,
    pub params: serde_json::Value,
    pub handler: Arc<dyn Handler>,
    pub failure_policy: FailurePolicy,
    /// How long a check or quota call may take before the failure policy applies.
    pub timeout: std::time::Duration,
    /// The handler's dispatch controls as configured (sampling, buffering, retry).
    pub dispatch: mixer_proto::v2::DispatchControls,
    /// Retries of failed check calls, when configured.
    pub retry: Option<crate::retry::RetryPolicy>,
    /// Report dispatch (sampling, buffering, aggregation, drop accounting) compiled from
    /// `dispatch`; see [`crate::dispatch`].
    pub report_dispatch: Arc<crate::dispatch::ReportDispatch>,
    /// Identity of what the handler was built from; equal fingerprints across a swap keep the
    /// handler (and its state).
    pub(crate) fingerprint: String,
}

impl fmt::Debug for HandlerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerEntry")
            .field("name", &self.name)
            .field("adapter", &self.adapter)
            .field("failure_policy", &self.failure_policy)
            .finish_non_exhaustive()
    }
}

/// One action of a rule: a handler and the instances sent to it.
#[derive(Clone, Debug)]
pub struct CompiledAction {
    pub name: Option<Arc<str>>,
    /// Index into [`Snapshot::handlers`].
    pub handler: usize,
    /// Indexes into [`Snapshot::instances`].
    pub instances: Vec<usize>,
}

/// A header operation of a rule.
#[derive(Clone, Debug)]
pub struct CompiledHeaderOp {
    pub name: Arc<str>,
    pub values: Vec<Expression>,
    pub kind: HeaderOpKind,
}

/// What a header operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderOpKind {
    Replace,
    Remove,
    Append,
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    /// `rule/namespace/name`
    pub name: Arc<str>,
    /// `None` matches every request.
    pub predicate: Option<Expression>,
    /// Rules outside the config's root namespace apply only to requests whose
    /// `destination.namespace` is theirs (Mixer's namespace scoping).
    pub namespace_scope: Option<Arc<str>>,
    pub check_actions: Vec<CompiledAction>,
    pub quota_actions: Vec<CompiledAction>,
    pub report_actions: Vec<CompiledAction>,
    pub mutation_actions: Vec<CompiledAction>,
    pub request_header_ops: Vec<CompiledHeaderOp>,
    pub response_header_ops: Vec<CompiledHeaderOp>,
    /// Evaluate and count but never deny.
    pub experimental: bool,
    /// Configured faults for requests this rule matches.
    pub fault: Option<Fault>,
}

/// Failure injection: for a fraction of matching requests, fail with a status and/or delay the
/// check (to test how the mesh copes).
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// 0.0 ..= 1.0
    pub fraction: f64,
    /// Deny with this status (none: only delay).
    pub status: Option<crate::status::Status>,
    pub delay: Option<std::time::Duration>,
}

/// An immutable compiled config.
#[derive(Debug)]
pub struct Snapshot {
    pub vocabulary: Vocabulary,
    pub handlers: Vec<HandlerEntry>,
    pub instances: Vec<Arc<CompiledInstance>>,
    pub rules: Vec<CompiledRule>,
    /// The attribute-producing adapters run before the transform, in order.
    pub apa: ApaChain,
    /// Which quotas requests charge (QuotaSpec / QuotaSpecBinding).
    pub quota_specs: QuotaSpecs,
    /// Candidate rules by guard attribute value.
    pub rule_index: index::RuleIndex,
    /// Non-fatal notes (skipped kinds and handlers).
    pub warnings: Vec<String>,
    /// `destination.namespace` in this vocabulary (for namespace-scoped rules).
    pub(crate) destination_namespace: Option<AttrId>,
}

impl Snapshot {
    /// A snapshot with no rules (every check allows, every report is a no-op).
    pub fn empty() -> Snapshot {
        let vocabulary = Vocabulary::istio();
        let destination_namespace = vocabulary.lookup("destination.namespace");
        Snapshot {
            vocabulary,
            handlers: Vec::new(),
            instances: Vec::new(),
            rules: Vec::new(),
            apa: ApaChain::default(),
            quota_specs: QuotaSpecs::default(),
            rule_index: index::RuleIndex::default(),
            warnings: Vec::new(),
            destination_namespace,
        }
    }

    /// The handler named `name` (`name.namespace`).
    pub fn handler(&self, name: &str) -> Option<&HandlerEntry> {
        self.handlers.iter().find(|h| &*h.name == name)
    }
}
