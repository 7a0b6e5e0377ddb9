//! Adapter traits: what a backend (or attribute producer) implements to plug into the pipeline.
//!
//! An [`Adapter`] is registered once by name (`denier`, `prometheus`, ...) and declares the
//! templates it accepts. For each configured handler it builds a [`Handler`] from the handler's
//! params and the instances routed to it; the handler then serves requests through the trait of
//! its kind: [`CheckHandler`], [`QuotaHandler`], [`ReportHandler`], [`MutationHandler`] or
//! [`AttributeProducer`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use mixer_attr::{Duration, Value};

use crate::instance::{CompiledInstance, InstanceView};
use crate::mutation::Direction;
use crate::pal::{Dispatcher, Platform};
use crate::pending::Poll;
use crate::status::Status;

/// Handler params as written in config (YAML and protobuf `Struct` both map onto JSON values).
pub type Params = serde_json::Value;

/// A params key in `snake_case` (`jwksUri` -> `jwks_uri`), for adapters that accept both
/// spellings of their fields, as Istio's did.
pub fn snake_case_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Everything an adapter needs to build a handler.
pub struct HandlerConfig<'a> {
    /// The handler's name (`denyreviewsv3handler.istio-system`).
    pub name: &'a str,
    pub params: &'a Params,
    /// The instances that rules route to this handler.
    pub instances: &'a [Arc<CompiledInstance>],
    pub platform: &'a Platform,
}

impl fmt::Debug for HandlerConfig<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerConfig")
            .field("name", &self.name)
            .field("params", &self.params)
            .field("instances", &self.instances.len())
            .finish()
    }
}

/// A handler could not be built from its config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AdapterError {
    /// The params field at fault (`params.entryType`), when there is one.
    pub field: Option<String>,
    pub message: String,
}

impl AdapterError {
    /// An error about `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        AdapterError {
            field: Some(field.into()),
            message: message.into(),
        }
    }
    /// An error about the handler as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        AdapterError {
            field: None,
            message: message.into(),
        }
    }
}

/// A kind of backend, registered by name.
pub trait Adapter: Send + Sync {
    /// The adapter's name in config (`adapter: denier`, `compiledAdapter: denier`).
    fn name(&self) -> &'static str;
    /// The templates its handlers accept.
    fn templates(&self) -> &'static [&'static str];
    /// Builds a handler. Called at config time, never on the request path.
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError>;
}

/// A configured backend. Implement the `as_*` accessors for the kinds it serves.
pub trait Handler: Send + Sync {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        None
    }
    fn as_quota(&self) -> Option<&dyn QuotaHandler> {
        None
    }
    fn as_report(&self) -> Option<&dyn ReportHandler> {
        None
    }
    fn as_mutation(&self) -> Option<&dyn MutationHandler> {
        None
    }
    fn as_attribute_producer(&self) -> Option<&dyn AttributeProducer> {
        None
    }
    /// Sends anything buffered (called on config swap and shutdown).
    fn flush(&self) {}
    /// The handler as `Any`, for hosts that need the concrete type (a Prometheus handler to
    /// render): `entry.handler.as_any()?.downcast_ref::<Prometheus>()`.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// What a check or quota handler may use while serving a request.
pub struct RequestContext<'a> {
    /// The worker thread's dispatcher (timers, callouts).
    pub dispatcher: &'a Arc<dyn Dispatcher>,
}

impl fmt::Debug for RequestContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestContext")
    }
}

/// A backend's precondition answer.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CheckResult {
    pub status: Status,
    /// How long the answer may be reused for requests with the same referenced attributes.
    pub valid_duration: Duration,
    /// How many requests may reuse it.
    pub valid_use_count: i32,
    /// Named outputs a rule's header operations can read as `<action>.output.<field>`.
    pub outputs: Vec<(String, String)>,
    /// The backend could not decide (unreachable, list unavailable): the handler's failure
    /// policy applies instead of `status`.
    pub backend_failure: bool,
    /// A response the proxy sends instead of forwarding (a redirect, a custom denial page).
    pub direct_response: Option<crate::decision::DirectResponse>,
}

impl CheckResult {
    /// Allow, valid for `valid_duration` and `valid_use_count` uses.
    pub fn allow(valid_duration: Duration, valid_use_count: i32) -> Self {
        CheckResult {
            status: Status::ok(),
            valid_duration,
            valid_use_count,
            ..Default::default()
        }
    }
    /// Deny with `status`.
    pub fn deny(status: Status, valid_duration: Duration, valid_use_count: i32) -> Self {
        CheckResult {
            status,
            valid_duration,
            valid_use_count,
            ..Default::default()
        }
    }
    /// The backend failed; `status` says why (UNAVAILABLE, DEADLINE_EXCEEDED, ...).
    pub fn failure(status: Status) -> Self {
        CheckResult {
            status,
            backend_failure: true,
            ..Default::default()
        }
    }
}

/// Serves `check`-variety templates.
pub trait CheckHandler: Send + Sync {
    fn check(&self, instance: &InstanceView<'_>, ctx: &RequestContext<'_>) -> Poll<CheckResult>;
}

/// Arguments of a quota allocation.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct QuotaArgs {
    /// Units requested.
    pub amount: i64,
    /// Grant fewer than requested rather than none.
    pub best_effort: bool,
    /// Identifies a retried request so it is not charged twice.
    pub deduplication_id: String,
}

/// A quota backend's answer.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct QuotaResult {
    pub status: Status,
    pub granted: i64,
    /// How long the granted units remain valid.
    pub valid_duration: Duration,
}

/// Serves `quota`-variety templates.
pub trait QuotaHandler: Send + Sync {
    fn allocate(
        &self,
        instance: &InstanceView<'_>,
        args: &QuotaArgs,
        ctx: &RequestContext<'_>,
    ) -> Poll<QuotaResult>;

    /// True for remote backends: the pipeline then answers quota checks from the token cache
    /// and calls `allocate` only to prefetch tokens (deduplication ids are not forwarded).
    fn prefetch(&self) -> bool {
        false
    }
}

/// Serves `report`-variety templates. Called inline on the request path: buffer, don't block.
pub trait ReportHandler: Send + Sync {
    fn report(&self, instances: &[InstanceView<'_>]);

    /// Whether buffered instances of `instance` may be pre-aggregated: the position (see
    /// [`CompiledInstance::position`]) of a numeric field whose values add up (a counter's
    /// increment). When the handler's dispatch buffers, instances whose other fields are all
    /// equal are then merged into one carrying the sum. Called at config time. Default: never.
    fn aggregation(&self, instance: &CompiledInstance) -> Option<usize> {
        let _ = instance;
        None
    }
}

/// A header change produced by mutation or by a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderChange {
    Set(String, String),
    Append(String, String),
    Remove(String),
}

/// One request or response message passing through mutation: what the handlers changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MutationMessage {
    /// Header changes, in the order the handlers made them.
    pub header_changes: Vec<HeaderChange>,
    /// The body, when a handler replaced it.
    pub body: Option<Bytes>,
}

/// Serves `mutation`-variety templates: rewrites request and response messages (see
/// [`crate::mutation`] for how bodies are streamed and limited).
pub trait MutationHandler: Send + Sync {
    /// The largest body of a `direction` message this handler reads (and may replace), or
    /// `None` when it changes only the headers of such messages, so their bodies stream through
    /// untouched. Called once per message, when its headers are known.
    fn body_limit(&self, direction: Direction) -> Option<usize>;

    /// Rewrites one message given the instance. `body` is the whole body as earlier handlers
    /// left it when [`MutationHandler::body_limit`] is `Some`, and empty otherwise. Add header
    /// changes to `message` and set `message.body` to replace the body. An error stops the
    /// message; use `INVALID_ARGUMENT` for a body that cannot be converted.
    fn mutate(
        &self,
        instance: &InstanceView<'_>,
        direction: Direction,
        body: &[u8],
        message: &mut MutationMessage,
    ) -> Result<(), Status>;
}

/// What an attribute-producing adapter may use while producing.
pub struct ApaContext<'a> {
    /// The worker thread's dispatcher.
    pub dispatcher: &'a Arc<dyn Dispatcher>,
    /// Monotonic time of the request (the host's approximate clock: cache validity only).
    pub monotonic: crate::pal::MonoTime,
    /// Wall-clock time, read from `clock` on first use: most requests need none (a clock read
    /// is a system call on some hosts).
    wall: std::cell::OnceCell<mixer_attr::Timestamp>,
    clock: Option<&'a dyn crate::pal::Clock>,
}

impl<'a> ApaContext<'a> {
    /// A context reading wall-clock time from `clock` when an adapter first asks for it.
    pub fn new(
        dispatcher: &'a Arc<dyn Dispatcher>,
        clock: &'a dyn crate::pal::Clock,
        monotonic: crate::pal::MonoTime,
    ) -> Self {
        ApaContext {
            dispatcher,
            monotonic,
            wall: std::cell::OnceCell::new(),
            clock: Some(clock),
        }
    }

    /// A context at fixed times (tests, benches, tools).
    pub fn at(
        dispatcher: &'a Arc<dyn Dispatcher>,
        now: mixer_attr::Timestamp,
        monotonic: crate::pal::MonoTime,
    ) -> Self {
        ApaContext {
            dispatcher,
            monotonic,
            wall: std::cell::OnceCell::from(now),
            clock: None,
        }
    }

    /// Wall-clock time of the request (token expiry and the like): the same for every adapter
    /// of one request.
    pub fn now(&self) -> mixer_attr::Timestamp {
        *self.wall.get_or_init(|| match self.clock {
            Some(c) => c.wall(),
            None => mixer_attr::Timestamp::default(),
        })
    }
}

impl fmt::Debug for ApaContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApaContext")
            .field("now", &self.wall.get())
            .field("monotonic", &self.monotonic)
            .finish()
    }
}

/// The outputs of one attribute-producing call, by position in the template's
/// [`TemplateInfo::outputs`](crate::template::TemplateInfo::outputs). Values borrow from the
/// output, so an adapter can hand out shared inventory entries without copying them.
pub trait ApaOutput: Send + Sync {
    /// The value of output `position`, or `None` when the adapter has none (the binding's
    /// default then applies: `$out.source_pod_name | "unknown"`).
    fn get(&self, position: usize) -> Option<Value<'_>>;
}

/// An [`ApaOutput`] held as plain values, for adapters without a better representation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApaValues(pub Vec<Option<Value<'static>>>);

impl ApaValues {
    /// `n` absent outputs.
    pub fn with_len(n: usize) -> Self {
        ApaValues(vec![None; n])
    }
    /// Sets output `position` (ignored when out of range).
    pub fn set(&mut self, position: usize, value: Value<'static>) {
        if let Some(slot) = self.0.get_mut(position) {
            *slot = Some(value);
        }
    }
}

impl ApaOutput for ApaValues {
    fn get(&self, position: usize) -> Option<Value<'_>> {
        self.0.get(position)?.as_ref().map(Value::reborrow)
    }
}

/// The outputs an attribute producer returns for one instance.
#[derive(Clone)]
pub struct Produced {
    pub output: Arc<dyn ApaOutput>,
    /// How long the pipeline may reuse `output` for requests whose instance has the same
    /// values (`None`: not cached; the adapter is cheaper than a cache lookup, or its answer
    /// changes without its inputs changing).
    pub cache_for: Option<std::time::Duration>,
    /// True when `output` depends only on the instance values and the handler's
    /// [`AttributeProducer::generation`]: each thread keeps its stage's last outputs and reuses
    /// them, without calling the handler, for its next request with the same values while the
    /// generation holds (never shared between threads, never for other values).
    pub reusable: bool,
}

impl fmt::Debug for Produced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Produced")
            .field("cache_for", &self.cache_for)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

impl Produced {
    /// Outputs that are not cached: the handler is called for every request.
    pub fn uncached(output: Arc<dyn ApaOutput>) -> Self {
        Produced {
            output,
            cache_for: None,
            reusable: false,
        }
    }
    /// Outputs that depend only on the instance values and the handler's generation (see
    /// [`Produced::reusable`](Produced#structfield.reusable)).
    pub fn reusable(output: Arc<dyn ApaOutput>) -> Self {
        Produced {
            output,
            cache_for: None,
            reusable: true,
        }
    }
    /// No outputs at all (every binding takes its default).
    pub fn nothing() -> Self {
        static EMPTY: std::sync::OnceLock<Arc<ApaValues>> = std::sync::OnceLock::new();
        let empty: Arc<dyn ApaOutput> = EMPTY
            .get_or_init(|| Arc::new(ApaValues(Vec::new())))
            .clone();
        Produced::uncached(empty)
    }
}

/// An attribute-producing adapter (APA): runs after ingestion and before the transform, and
/// produces the outputs of its template (`$out.*`), which the config binds to attributes.
///
/// Called inline on the request path for every check, report and mutation: look up, don't
/// block. An error is a failure of this handler; its failure policy decides (fail-open: the
/// outputs are absent; fail-close: checks are denied with the status).
pub trait AttributeProducer: Send + Sync {
    fn produce(
        &self,
        instance: &InstanceView<'_>,
        ctx: &ApaContext<'_>,
    ) -> Result<Produced, Status>;

    /// What [`Produced::reusable`](Produced#structfield.reusable) outputs depend on besides
    /// the instance values (a `kubernetesenv` handler's inventory version): read before
    /// `produce`, compared on every reuse. Constant for handlers whose answers depend on the
    /// values alone.
    fn generation(&self) -> u64 {
        0
    }

    /// False while the handler has nothing to look anything up in (a `kubernetesenv` handler
    /// with no inventory source configured): the pipeline then leaves its stage out of the
    /// chain, with a config warning, so ingested attributes are not overwritten by defaults.
    fn active(&self) -> bool {
        true
    }
}

/// The adapters a build offers, by name.
#[derive(Clone, Default)]
pub struct AdapterRegistry {
    adapters: HashMap<&'static str, Arc<dyn Adapter>>,
}

impl fmt::Debug for AdapterRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.adapters.keys().collect();
        names.sort();
        f.debug_struct("AdapterRegistry")
            .field("adapters", &names)
            .finish()
    }
}

impl AdapterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `adapter` (replacing one of the same name).
    pub fn register(&mut self, adapter: Arc<dyn Adapter>) -> &mut Self {
        self.adapters.insert(adapter.name(), adapter);
        self
    }

    /// The adapter named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Adapter>> {
        self.adapters.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.adapters.keys().copied().collect();
        v.sort_unstable();
        v
    }
}
