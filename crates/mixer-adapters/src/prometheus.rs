//! `prometheus`: `metric` instances as Prometheus counters, gauges and histograms, exposed in the
//! Prometheus text format or OpenMetrics by a function the host serves (Mixer's prometheus
//! adapter, with its params format as Istio's default config writes it).
//!
//! ```yaml
//! params:
//!   metricsExpirationPolicy:
//!     metricsExpiryDuration: "10m"        # series not updated for this long are dropped
//!     expiryCheckIntervalDuration: "1m"   # default: half the expiry duration
//!   metrics:
//!   - name: requests_total                # exposed as istio_requests_total
//!     namespace: istio                    # the default prefix
//!     instance_name: requestcount.instance.istio-system
//!     kind: COUNTER                       # GAUGE, COUNTER, DISTRIBUTION
//!     label_names: [reporter, response_code]    # dimensions of the instance
//!     buckets:                            # DISTRIBUTION only, one of:
//!       explicit_buckets: { bounds: [0.005, 0.01, 0.1, 1] }
//!       linear_buckets: { num_finite_buckets: 10, width: 5, offset: 0 }      # offset + i*width
//!       exponential_buckets: { num_finite_buckets: 8, growth_factor: 10, scale: 1 } # scale*gf^i
//! ```
//!
//! Field names are accepted in snake_case and camelCase (Istio's config mixes both). A
//! `DISTRIBUTION` without buckets uses Prometheus' default buckets. Values: INT64, DOUBLE, a
//! DURATION (in seconds: `request_duration_seconds`) or a numeric string; anything else, and a
//! negative counter increment, is counted in [`Prometheus::errors`] and not recorded.
//!
//! # Host API
//!
//! The host finds the handlers of a snapshot with [`handlers`] (or `entry.handler.as_any()` and a
//! downcast to [`Prometheus`]) and serves [`render`] (every handler of the snapshot, one
//! exposition) or [`Prometheus::render`] with the [`Format`]'s [`Format::content_type`].
//!
//! # Cost and state
//!
//! Label positions are resolved when the handler is built. Per report, a series is found by a hash
//! of its label values formatted into a per-thread buffer (no allocation once the series exists)
//! in one of 16 read-locked shards; counters, gauges and histogram buckets are atomics updated
//! under the shard's read lock (so expiry, which takes the write lock, never loses an update).
//! Counters accept pre-aggregated batches ([`ReportHandler::aggregation`]): with dispatch
//! buffering, increments of the same series are summed before they reach the handler.
//!
//! A handler rebuilt by a config change (the same handler name) takes over the series of every
//! metric whose definition (name, kind, labels, buckets, help) is unchanged, so counters do not
//! reset; metrics the new config drops disappear with the old handler. A handler the config keeps
//! unchanged is not rebuilt at all.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use mixer_attr::Value;
use mixer_core::Snapshot;
use mixer_core::adapter::{Adapter, AdapterError, Handler, HandlerConfig, ReportHandler};
use mixer_core::instance::{CompiledInstance, InstanceView};
use mixer_core::pal::{Clock, Dispatcher};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

/// Prometheus' default histogram buckets.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const SHARDS: usize = 16;

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    #[default]
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The HTTP `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

// --- params -----------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Params {
    #[serde(default)]
    metrics: Vec<MetricParams>,
    #[serde(default, alias = "metrics_expiration_policy")]
    metrics_expiration_policy: Option<ExpiryParams>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExpiryParams {
    #[serde(default, alias = "metrics_expiry_duration")]
    metrics_expiry_duration: Option<String>,
    #[serde(default, alias = "expiry_check_interval_duration")]
    expiry_check_interval_duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MetricParams {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(alias = "instance_name")]
    instance_name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, alias = "label_names")]
    label_names: Vec<String>,
    #[serde(default)]
    buckets: Option<BucketParams>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BucketParams {
    #[serde(default, alias = "explicit_buckets")]
    explicit_buckets: Option<ExplicitBuckets>,
    #[serde(default, alias = "linear_buckets")]
    linear_buckets: Option<LinearBuckets>,
    #[serde(default, alias = "exponential_buckets")]
    exponential_buckets: Option<ExponentialBuckets>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExplicitBuckets {
    #[serde(default)]
    bounds: Vec<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LinearBuckets {
    #[serde(default, alias = "num_finite_buckets")]
    num_finite_buckets: u32,
    #[serde(default)]
    width: f64,
    #[serde(default)]
    offset: f64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExponentialBuckets {
    #[serde(default, alias = "num_finite_buckets")]
    num_finite_buckets: u32,
    #[serde(default, alias = "growth_factor")]
    growth_factor: f64,
    #[serde(default)]
    scale: f64,
}

/// Largest number of finite buckets accepted (a histogram series holds one counter per bucket).
const MAX_BUCKETS: u32 = 1000;

fn buckets(b: &BucketParams, field: &str) -> Result<Vec<f64>, AdapterError> {
    let given = [
        b.explicit_buckets.is_some(),
        b.linear_buckets.is_some(),
        b.exponential_buckets.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(AdapterError::field(
            field,
            "give one of explicit_buckets, linear_buckets, exponential_buckets",
        ));
    }
    let bounds: Vec<f64> = if let Some(e) = &b.explicit_buckets {
        e.bounds.clone()
    } else if let Some(l) = &b.linear_buckets {
        let f = format!("{field}.linear_buckets");
        if l.num_finite_buckets == 0 || l.num_finite_buckets > MAX_BUCKETS {
            return Err(AdapterError::field(
                f,
                format!("num_finite_buckets must be 1..={MAX_BUCKETS}"),
            ));
        }
        if !l.width.is_finite() || l.width <= 0.0 || !l.offset.is_finite() {
            return Err(AdapterError::field(
                f,
                "width must be positive and offset finite",
            ));
        }
        (0..=l.num_finite_buckets)
            .map(|i| l.offset + f64::from(i) * l.width)
            .collect()
    } else if let Some(x) = &b.exponential_buckets {
        let f = format!("{field}.exponential_buckets");
        if x.num_finite_buckets == 0 || x.num_finite_buckets > MAX_BUCKETS {
            return Err(AdapterError::field(
                f,
                format!("num_finite_buckets must be 1..={MAX_BUCKETS}"),
            ));
        }
        if !x.growth_factor.is_finite()
            || x.growth_factor <= 1.0
            || !x.scale.is_finite()
            || x.scale <= 0.0
        {
            return Err(AdapterError::field(
                f,
                "growth_factor must be above 1 and scale positive",
            ));
        }
        let mut v = Vec::new();
        let mut bound = x.scale;
        for _ in 0..=x.num_finite_buckets {
            v.push(bound);
            bound *= x.growth_factor;
        }
        v
    } else {
        DEFAULT_BUCKETS.to_vec()
    };
    if bounds.is_empty() {
        return Err(AdapterError::field(
            format!("{field}.explicit_buckets.bounds"),
            "no bounds",
        ));
    }
    if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(AdapterError::field(
            field,
            "bucket bounds must be finite and strictly increasing",
        ));
    }
    Ok(bounds)
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

// --- metric state -------------------------------------------------------------------------------

/// What a metric is; equal definitions share state across handler rebuilds.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram(Vec<f64>),
}

#[derive(Clone, Debug, PartialEq)]
struct MetricDef {
    /// The full name (`istio_requests_total`).
    name: String,
    help: String,
    kind: Kind,
    /// Label names in config order.
    labels: Vec<String>,
}

/// One labelled series.
struct Series {
    /// Label values in config order, back to back (compared with one `memcmp` per report).
    key: Box<str>,
    /// Where each label value ends in `key`.
    ends: Box<[usize]>,
    /// Counter or gauge value (f64 bits); histogram sum.
    value: AtomicU64,
    /// Histogram: observations per bucket (not cumulative), the last one `+Inf`.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Monotonic time of the last update, ns.
    updated: AtomicU64,
}

fn add_f64(a: &AtomicU64, v: f64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + v).to_bits())
    });
}

fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

impl Series {
    fn new(key: &str, ends: &[usize], kind: &Kind) -> Series {
        let n = match kind {
            Kind::Histogram(b) => b.len() + 1,
            _ => 0,
        };
        Series {
            key: key.into(),
            ends: ends.into(),
            value: AtomicU64::new(0f64.to_bits()),
            buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            updated: AtomicU64::new(0),
        }
    }

    /// The label values, in config order.
    fn labels(&self) -> impl Iterator<Item = &str> {
        slices(&self.key, &self.ends)
    }

    /// Label value `i` (config order).
    fn label(&self, i: usize) -> &str {
        let start = i
            .checked_sub(1)
            .and_then(|j| self.ends.get(j))
            .copied()
            .unwrap_or(0);
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.key.get(start..end).unwrap_or("")
    }

    fn record(&self, kind: &Kind, v: f64, now: u64) {
        match kind {
            Kind::Counter => add_f64(&self.value, v),
            Kind::Gauge => self.value.store(v.to_bits(), Ordering::Relaxed),
            Kind::Histogram(bounds) => {
                // Prometheus buckets are upper-inclusive: the first bound >= v.
                let i = bounds.partition_point(|b| *b < v);
                if let Some(b) = self.buckets.get(i) {
                    b.fetch_add(1, Ordering::Relaxed);
                }
                add_f64(&self.value, v);
                self.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.updated.fetch_max(now, Ordering::Relaxed);
    }
}

/// The key is already a hash: use it as is.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = RwLock<HashMap<u64, Vec<Arc<Series>>, BuildHasherDefault<IdentityHasher>>>;

/// A metric's series.
struct MetricState {
    def: MetricDef,
    shards: Box<[Shard]>,
}

const K: u64 = 0x517c_c1b7_2722_0a95;

/// FxHash-style hash of label values written back to back, and how many there are (equal
/// texts split differently collide; equality of the split decides).
fn hash_labels(buf: &str, labels: usize) -> u64 {
    let mut h: u64 = labels as u64;
    let mut mix = |w: u64| h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    let bytes = buf.as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        mix(u64::from_le_bytes(w));
    }
    let mut w = [0u8; 8];
    let rest = chunks.remainder();
    w[..rest.len()].copy_from_slice(rest);
    mix(u64::from_le_bytes(w) ^ ((bytes.len() as u64) << 48));
    // Finalize so every bit range (shard choice, map index, control bits) is well mixed.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

thread_local! {
    /// Label values of the report being recorded, formatted back to back, and their ends.
    static LABELS: RefCell<(String, Vec<usize>)> = const { RefCell::new((String::new(), Vec::new())) };
}

fn slices<'a>(buf: &'a str, ends: &'a [usize]) -> impl Iterator<Item = &'a str> + 'a {
    let mut start = 0;
    ends.iter().map(move |&e| {
        let s = buf.get(start..e).unwrap_or("");
        start = e;
        s
    })
}

impl MetricState {
    fn new(def: MetricDef) -> MetricState {
        MetricState {
            def,
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
        }
    }

    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// Records `v` in the series whose label values are `buf` split at `ends`.
    fn record(&self, buf: &str, ends: &[usize], v: f64, now: u64) {
        let hash = hash_labels(buf, ends.len());
        let shard = self.shard(hash);
        let same = |s: &Series| *s.key == *buf && *s.ends == *ends;
        {
            let map = shard.read();
            if let Some(s) = map
                .get(&hash)
                .and_then(|list| list.iter().find(|s| same(s)))
            {
                s.record(&self.def.kind, v, now);
                return;
            }
        }
        let mut map = shard.write();
        let list = map.entry(hash).or_default();
        if let Some(s) = list.iter().find(|s| same(s)) {
            s.record(&self.def.kind, v, now);
            return;
        }
        let s = Series::new(buf, ends, &self.def.kind);
        s.record(&self.def.kind, v, now);
        list.push(Arc::new(s));
    }

    /// Drops series not updated since `cutoff`. Returns how many.
    fn expire(&self, cutoff: u64) -> usize {
        let mut n = 0;
        for shard in self.shards.iter() {
            let mut map = shard.write();
            map.retain(|_, list| {
                let before = list.len();
                list.retain(|s| s.updated.load(Ordering::Relaxed) >= cutoff);
                n += before - list.len();
                !list.is_empty()
            });
        }
        n
    }

    fn series(&self) -> Vec<Arc<Series>> {
        let mut all: Vec<Arc<Series>> = self
            .shards
            .iter()
            .flat_map(|s| s.read().values().flatten().cloned().collect::<Vec<_>>())
            .collect();
        all.sort_by(|a, b| a.labels().cmp(b.labels()));
        all
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().values().map(Vec::len).sum::<usize>())
            .sum()
    }
}

// --- the handler ---------------------------------------------------------------------------------

/// How one instance feeds one metric.
struct Binding {
    /// Identity of the compiled instance.
    instance: usize,
    metric: usize,
    value: usize,
    /// Positions of the label dimensions, in the metric's label order.
    labels: Vec<usize>,
}

struct Inner {
    name: String,
    metrics: Vec<Arc<MetricState>>,
    bindings: Vec<Binding>,
    /// Series not updated for this long are dropped (ns); 0: never.
    expiry_ns: u64,
    clock: Arc<dyn Clock>,
    errors: AtomicU64,
}

/// A built prometheus handler.
pub struct Prometheus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("handler", &self.inner.name)
            .field("metrics", &self.metric_names())
            .finish_non_exhaustive()
    }
}

/// The `prometheus` adapter. Keeps a weak registry of the metrics its handlers built, so a
/// rebuilt handler takes over the series of unchanged metrics.
#[derive(Default, Clone)]
pub struct PrometheusAdapter {
    registry: Arc<Mutex<HashMap<String, Weak<MetricState>>>>,
}

impl std::fmt::Debug for PrometheusAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusAdapter").finish_non_exhaustive()
    }
}

fn identity(i: &CompiledInstance) -> usize {
    std::ptr::from_ref(i) as usize
}

impl Adapter for PrometheusAdapter {
    fn name(&self) -> &'static str {
        "prometheus"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["metric"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let params: Params = if config.params.is_null() {
            Params::default()
        } else {
            serde_json::from_value(config.params.clone())
                .map_err(|e| AdapterError::new(e.to_string()))?
        };
        let mut defs = Vec::new();
        let mut bindings = Vec::new();
        for (mi, m) in params.metrics.iter().enumerate() {
            let field = format!("metrics[{mi}]");
            let namespace = m
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or("istio");
            let name = format!("{namespace}_{}", m.name);
            if m.name.is_empty() || !valid_metric_name(&name) {
                return Err(AdapterError::field(
                    format!("{field}.name"),
                    format!("`{name}` is not a valid Prometheus metric name"),
                ));
            }
            if defs.iter().any(|d: &MetricDef| d.name == name) {
                return Err(AdapterError::field(
                    format!("{field}.name"),
                    format!("metric `{name}` is defined twice"),
                ));
            }
            let kind = match m.kind.as_deref().unwrap_or("") {
                "COUNTER" => Kind::Counter,
                "GAUGE" => Kind::Gauge,
                "DISTRIBUTION" => Kind::Histogram(buckets(
                    m.buckets.as_ref().unwrap_or(&BucketParams::default()),
                    &format!("{field}.buckets"),
                )?),
                other => {
                    return Err(AdapterError::field(
                        format!("{field}.kind"),
                        format!("`{other}` is not one of GAUGE, COUNTER, DISTRIBUTION"),
                    ));
                }
            };
            if m.buckets.is_some() && !matches!(kind, Kind::Histogram(_)) {
                return Err(AdapterError::field(
                    format!("{field}.buckets"),
                    "only a DISTRIBUTION has buckets",
                ));
            }
            for (li, l) in m.label_names.iter().enumerate() {
                let lf = format!("{field}.label_names[{li}]");
                if !valid_label_name(l) || (l == "le" && matches!(kind, Kind::Histogram(_))) {
                    return Err(AdapterError::field(
                        lf,
                        format!("`{l}` is not a valid label name"),
                    ));
                }
                if m.label_names[..li].contains(l) {
                    return Err(AdapterError::field(
                        lf,
                        format!("label `{l}` is given twice"),
                    ));
                }
            }
            // Every instance of the handler that this metric names.
            for inst in config
                .instances
                .iter()
                .filter(|i| i.is_named(&m.instance_name))
            {
                let value = inst.position("value").ok_or_else(|| {
                    AdapterError::field(
                        format!("{field}.instance_name"),
                        format!("instance `{}` has no `value`", inst.name),
                    )
                })?;
                let mut labels = Vec::new();
                for (li, l) in m.label_names.iter().enumerate() {
                    let pos = inst.position(&format!("dimensions.{l}")).ok_or_else(|| {
                        AdapterError::field(
                            format!("{field}.label_names[{li}]"),
                            format!("label `{l}` is not a dimension of instance `{}`", inst.name),
                        )
                    })?;
                    labels.push(pos);
                }
                bindings.push(Binding {
                    instance: identity(inst),
                    metric: defs.len(),
                    value,
                    labels,
                });
            }
            let help = m
                .description
                .clone()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| m.name.clone());
            defs.push(MetricDef {
                name,
                help,
                kind,
                labels: m.label_names.clone(),
            });
        }
        for inst in config.instances.iter() {
            if !bindings.iter().any(|b| b.instance == identity(inst)) {
                return Err(AdapterError::field(
                    "metrics",
                    format!(
                        "instance `{}` is sent to this handler but no metric names it in instance_name",
                        inst.name
                    ),
                ));
            }
        }
        let policy = params.metrics_expiration_policy.unwrap_or_default();
        let expiry = crate::duration_param::parse(
            "metricsExpirationPolicy.metricsExpiryDuration",
            policy.metrics_expiry_duration.as_deref(),
            mixer_attr::Duration::ZERO,
        )?;
        let check = crate::duration_param::parse(
            "metricsExpirationPolicy.expiryCheckIntervalDuration",
            policy.expiry_check_interval_duration.as_deref(),
            mixer_attr::Duration::from_nanos(expiry.as_nanos() / 2),
        )?;
        let expiry_ns = u64::try_from(expiry.as_nanos()).unwrap_or(0);
        // Take over unchanged metrics of an earlier build of this handler.
        let metrics: Vec<Arc<MetricState>> = {
            let mut reg = self.registry.lock();
            reg.retain(|_, w| w.strong_count() > 0);
            defs.into_iter()
                .map(|def| {
                    let key = format!("{}\n{}", config.name, def.name);
                    match reg
                        .get(&key)
                        .and_then(Weak::upgrade)
                        .filter(|m| m.def == def)
                    {
                        Some(m) => m,
                        None => {
                            let m = Arc::new(MetricState::new(def));
                            reg.insert(key, Arc::downgrade(&m));
                            m
                        }
                    }
                })
                .collect()
        };
        let inner = Arc::new(Inner {
            name: config.name.to_string(),
            metrics,
            bindings,
            expiry_ns,
            clock: config.platform.clock.clone(),
            errors: AtomicU64::new(0),
        });
        if expiry_ns > 0 {
            let interval = check
                .to_std()
                .filter(|d| !d.is_zero())
                .unwrap_or(std::time::Duration::from_secs(1));
            schedule_expiry(
                config.platform.dispatcher.clone(),
                Arc::downgrade(&inner),
                interval,
            );
        }
        Ok(Arc::new(Prometheus { inner }))
    }
}

/// Drops expired series every `interval` on the platform's main dispatcher while the handler
/// lives.
fn schedule_expiry(
    dispatcher: Arc<dyn Dispatcher>,
    inner: Weak<Inner>,
    interval: std::time::Duration,
) {
    let d = dispatcher.clone();
    dispatcher.schedule(
        interval,
        Box::new(move || {
            if let Some(i) = inner.upgrade() {
                i.expire();
                drop(i);
                schedule_expiry(d, inner, interval);
            }
        }),
    );
}

impl Inner {
    fn expire(&self) -> usize {
        if self.expiry_ns == 0 {
            return 0;
        }
        let cutoff = self.clock.monotonic().0.saturating_sub(self.expiry_ns);
        self.metrics.iter().map(|m| m.expire(cutoff)).sum()
    }
}

/// The numeric value of a metric instance's `value`.
fn numeric(v: &Value<'_>) -> Option<f64> {
    match v {
        Value::Int64(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        Value::Duration(d) => Some(d.as_nanos() as f64 / 1e9),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Handler for Prometheus {
    fn as_report(&self) -> Option<&dyn ReportHandler> {
        Some(self)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl ReportHandler for Prometheus {
    fn report(&self, instances: &[InstanceView<'_>]) {
        let inner = &*self.inner;
        let now = inner.clock.monotonic().0;
        LABELS.with(|cell| {
            let Ok(mut guard) = cell.try_borrow_mut() else {
                return;
            };
            let (buf, ends) = &mut *guard;
            for view in instances {
                let id = identity(view.instance);
                for b in inner.bindings.iter().filter(|b| b.instance == id) {
                    let Some(metric) = inner.metrics.get(b.metric) else {
                        continue;
                    };
                    let v = match view.at(b.value).and_then(numeric) {
                        Some(v) if v.is_nan() => None,
                        Some(v) if v < 0.0 && metric.def.kind == Kind::Counter => None,
                        other => other,
                    };
                    let Some(v) = v else {
                        inner.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    buf.clear();
                    ends.clear();
                    for &p in &b.labels {
                        match view.at(p) {
                            Some(Value::String(s)) => buf.push_str(s),
                            Some(other) => {
                                let _ = write!(buf, "{other}");
                            }
                            None => {}
                        }
                        ends.push(buf.len());
                    }
                    metric.record(buf, ends, v, now);
                }
            }
        });
    }

    fn aggregation(&self, instance: &CompiledInstance) -> Option<usize> {
        // Counter increments add up; a histogram needs every observation.
        let id = identity(instance);
        let mut bound = self
            .inner
            .bindings
            .iter()
            .filter(|b| b.instance == id)
            .peekable();
        bound.peek()?;
        let mut value = None;
        for b in bound {
            if self.inner.metrics.get(b.metric).map(|m| &m.def.kind) != Some(&Kind::Counter) {
                return None;
            }
            value = Some(b.value);
        }
        value
    }
}

// --- exposition -----------------------------------------------------------------------------------

fn write_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

fn write_escaped(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// `{a="x",b="y"}` in label-name order, plus an optional extra label (`le`).
fn write_labels(
    out: &mut String,
    order: &[usize],
    names: &[String],
    values: &Series,
    extra: Option<(&str, &str)>,
) {
    if order.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for &i in order {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(names.get(i).map_or("", String::as_str));
        out.push_str("=\"");
        write_escaped(out, values.label(i), true);
        out.push('"');
    }
    if let Some((k, v)) = extra {
        if !first {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        out.push_str(v);
        out.push('"');
    }
    out.push('}');
}

impl MetricState {
    fn write(&self, out: &mut String, format: Format) {
        let series = self.series();
        if series.is_empty() {
            return;
        }
        let def = &self.def;
        let (family, type_name) = match (&def.kind, format) {
            (Kind::Counter, Format::OpenMetrics) => (
                def.name.strip_suffix("_total").unwrap_or(&def.name),
                "counter",
            ),
            (Kind::Counter, Format::Text) => (def.name.as_str(), "counter"),
            (Kind::Gauge, _) => (def.name.as_str(), "gauge"),
            (Kind::Histogram(_), _) => (def.name.as_str(), "histogram"),
        };
        let _ = write!(out, "# HELP {family} ");
        write_escaped(out, &def.help, false);
        let _ = writeln!(out, "\n# TYPE {family} {type_name}");
        let mut order: Vec<usize> = (0..def.labels.len()).collect();
        order.sort_by(|a, b| def.labels[*a].cmp(&def.labels[*b]));
        for s in &series {
            match &def.kind {
                Kind::Counter | Kind::Gauge => {
                    out.push_str(family);
                    if def.kind == Kind::Counter && format == Format::OpenMetrics {
                        out.push_str("_total");
                    }
                    write_labels(out, &order, &def.labels, s, None);
                    out.push(' ');
                    write_f64(out, load_f64(&s.value));
                    out.push('\n');
                }
                Kind::Histogram(bounds) => {
                    let mut cumulative = 0u64;
                    let mut le = String::new();
                    for (i, b) in s.buckets.iter().enumerate() {
                        cumulative += b.load(Ordering::Relaxed);
                        le.clear();
                        write_f64(&mut le, bounds.get(i).copied().unwrap_or(f64::INFINITY));
                        if format == Format::OpenMetrics && !le.contains(['.', 'e', 'I', 'N']) {
                            le.push_str(".0");
                        }
                        let _ = write!(out, "{family}_bucket");
                        write_labels(out, &order, &def.labels, s, Some(("le", &le)));
                        let _ = writeln!(out, " {cumulative}");
                    }
                    let _ = write!(out, "{family}_sum");
                    write_labels(out, &order, &def.labels, s, None);
                    out.push(' ');
                    write_f64(out, load_f64(&s.value));
                    let _ = write!(out, "\n{family}_count");
                    write_labels(out, &order, &def.labels, s, None);
                    let _ = writeln!(out, " {}", s.count.load(Ordering::Relaxed));
                }
            }
        }
    }
}

impl Prometheus {
    /// The handler's name (`prometheus.istio-system`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The full names of its metrics (`istio_requests_total`), in config order.
    pub fn metric_names(&self) -> Vec<&str> {
        self.inner
            .metrics
            .iter()
            .map(|m| m.def.name.as_str())
            .collect()
    }

    /// Number of live series of metric `name` (0 when unknown).
    pub fn series_count(&self, name: &str) -> usize {
        self.inner
            .metrics
            .iter()
            .find(|m| m.def.name == name)
            .map_or(0, |m| m.len())
    }

    /// Instances not recorded because their value was not a number (or a negative counter
    /// increment).
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Drops the series not updated within the expiry duration (also done by a timer and before
    /// each exposition). Returns how many were dropped.
    pub fn expire(&self) -> usize {
        self.inner.expire()
    }

    /// Appends this handler's metric families (no OpenMetrics `# EOF`).
    pub fn write_families(&self, out: &mut String, format: Format) {
        self.inner.expire();
        for m in &self.inner.metrics {
            m.write(out, format);
        }
    }

    /// A complete exposition of this handler's metrics.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        self.write_families(&mut out, format);
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// The prometheus handlers of `snapshot`.
pub fn handlers(snapshot: &Snapshot) -> Vec<&Prometheus> {
    snapshot
        .handlers
        .iter()
        .filter_map(|h| {
            h.handler
                .as_any()
                .and_then(|a| a.downcast_ref::<Prometheus>())
        })
        .collect()
}

/// One exposition of every prometheus handler of `snapshot` (what a host serves on
/// `/metrics`). Call `Pipeline::flush` first for buffered reports to be included.
pub fn render(snapshot: &Snapshot, format: Format) -> String {
    let mut out = String::new();
    for h in handlers(snapshot) {
        h.write_families(&mut out, format);
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}
