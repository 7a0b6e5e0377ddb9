//! `memquota`: rate limits counted in process (Mixer's memquota adapter), for one proxy or for
//! tests. Use `redisquota` when the limit must hold across proxies.
//!
//! ```yaml
//! params:
//!   quotas:
//!   - name: requestcountquota.instance.istio-system
//!     maxAmount: 500
//!     validDuration: 1s            # the window; 0: an allocation pool that never refills
//!     overrides:                   # the first override whose dimensions all match applies
//!     - dimensions: { destination: reviews }
//!       maxAmount: 1
//!       validDuration: 5s
//!   minDeduplicationDuration: 1s   # a repeated deduplication id within this is not charged again
//!   rateLimitAlgorithm: ROLLING_WINDOW   # or FIXED_WINDOW (an extension; Mixer's memquota rolled)
//!   bucketsPerWindow: 10           # rolling-window resolution
//!   maxKeys: 100000                # distinct dimension sets tracked (least recently used dropped)
//! ```
//!
//! Each distinct set of dimension values has its own counter, as in Mixer. Counters are kept
//! behind one short lock per key, so concurrent callers never grant past the limit.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use mixer_attr::Duration;
use mixer_core::adapter::{
    Adapter, AdapterError, Handler, HandlerConfig, QuotaArgs, QuotaHandler, QuotaResult,
    RequestContext,
};
use mixer_core::instance::InstanceView;
use mixer_core::pal::{Clock, MonoTime};
use mixer_core::pending::Poll;
use mixer_core::{Code, Status};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::duration_param;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OverrideParams {
    #[serde(default)]
    dimensions: HashMap<String, String>,
    max_amount: i64,
    #[serde(default)]
    valid_duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QuotaParams {
    name: String,
    max_amount: i64,
    #[serde(default)]
    valid_duration: Option<String>,
    #[serde(default)]
    overrides: Vec<OverrideParams>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    quotas: Vec<QuotaParams>,
    #[serde(default)]
    min_deduplication_duration: Option<String>,
    #[serde(default)]
    rate_limit_algorithm: Option<String>,
    #[serde(default)]
    buckets_per_window: Option<u32>,
    #[serde(default)]
    max_keys: Option<usize>,
}

/// How a window is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Counts reset at fixed window boundaries.
    FixedWindow,
    /// Counts over the last window, at `buckets_per_window` resolution.
    RollingWindow,
}

#[derive(Debug, Clone)]
struct Limit {
    max: i64,
    /// Zero: an allocation pool.
    window: u64,
}

#[derive(Debug)]
struct QuotaDef {
    name: String,
    default: Limit,
    overrides: Vec<(Vec<(String, String)>, Limit)>,
}

/// Usage of one key.
#[derive(Debug, Default)]
struct Counter {
    /// (bucket index, count), oldest first.
    buckets: Vec<(u64, i64)>,
}

impl Counter {
    fn used(&mut self, now_bucket: u64, buckets_per_window: u64) -> i64 {
        let oldest = now_bucket.saturating_sub(buckets_per_window - 1);
        self.buckets.retain(|(b, _)| *b >= oldest);
        self.buckets.iter().map(|(_, n)| *n).sum()
    }
    fn add(&mut self, bucket: u64, n: i64) {
        match self.buckets.last_mut() {
            Some((b, c)) if *b == bucket => *c += n,
            _ => self.buckets.push((bucket, n)),
        }
    }
}

struct Dedup {
    at: MonoTime,
    result: QuotaResult,
}

/// The `memquota` adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemQuotaAdapter;

/// A built memquota handler.
pub struct MemQuota {
    quotas: Vec<QuotaDef>,
    algorithm: Algorithm,
    buckets_per_window: u64,
    dedup_window: u64,
    clock: Arc<dyn Clock>,
    counters: Mutex<LruCache<String, Arc<Mutex<Counter>>>>,
    dedup: Mutex<LruCache<String, Dedup>>,
}

impl std::fmt::Debug for MemQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemQuota")
            .field("quotas", &self.quotas)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn nanos(field: &str, v: Option<&str>) -> Result<u64, AdapterError> {
    Ok(duration_param::parse(field, v, Duration::ZERO)?
        .as_nanos()
        .max(0) as u64)
}

impl Adapter for MemQuotaAdapter {
    fn name(&self) -> &'static str {
        "memquota"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["quota"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let p: Params = serde_json::from_value(config.params.clone())
            .map_err(|e| AdapterError::new(e.to_string()))?;
        let mut quotas = Vec::new();
        for (i, q) in p.quotas.into_iter().enumerate() {
            if q.max_amount < 0 {
                return Err(AdapterError::field(
                    format!("quotas[{i}].maxAmount"),
                    "must not be negative",
                ));
            }
            let default = Limit {
                max: q.max_amount,
                window: nanos(
                    &format!("quotas[{i}].validDuration"),
                    q.valid_duration.as_deref(),
                )?,
            };
            let mut overrides = Vec::new();
            for (j, o) in q.overrides.into_iter().enumerate() {
                let field = format!("quotas[{i}].overrides[{j}]");
                if o.max_amount < 0 {
                    return Err(AdapterError::field(
                        format!("{field}.maxAmount"),
                        "must not be negative",
                    ));
                }
                let window = match o.valid_duration.as_deref() {
                    Some(d) => nanos(&format!("{field}.validDuration"), Some(d))?,
                    None => default.window,
                };
                let mut dims: Vec<(String, String)> = o.dimensions.into_iter().collect();
                dims.sort();
                overrides.push((
                    dims,
                    Limit {
                        max: o.max_amount,
                        window,
                    },
                ));
            }
            quotas.push(QuotaDef {
                name: q.name,
                default,
                overrides,
            });
        }
        for inst in config.instances {
            if !quotas.iter().any(|q| inst.is_named(&q.name)) {
                return Err(AdapterError::field(
                    "quotas",
                    format!(
                        "no quota is configured for instance `{}` (name it `{}`)",
                        inst.name, inst.name
                    ),
                ));
            }
        }
        let algorithm = match p
            .rate_limit_algorithm
            .as_deref()
            .unwrap_or("ROLLING_WINDOW")
        {
            "ROLLING_WINDOW" => Algorithm::RollingWindow,
            "FIXED_WINDOW" => Algorithm::FixedWindow,
            other => {
                return Err(AdapterError::field(
                    "rateLimitAlgorithm",
                    format!("`{other}` is not FIXED_WINDOW or ROLLING_WINDOW"),
                ));
            }
        };
        let buckets = u64::from(p.buckets_per_window.unwrap_or(10).clamp(1, 1000));
        let max_keys = NonZeroUsize::new(p.max_keys.unwrap_or(100_000).clamp(1, 10_000_000))
            .unwrap_or(NonZeroUsize::MIN);
        Ok(Arc::new(MemQuota {
            quotas,
            algorithm,
            buckets_per_window: if algorithm == Algorithm::FixedWindow {
                1
            } else {
                buckets
            },
            dedup_window: nanos(
                "minDeduplicationDuration",
                p.min_deduplication_duration.as_deref(),
            )?,
            clock: config.platform.clock.clone(),
            counters: Mutex::new(LruCache::new(max_keys)),
            dedup: Mutex::new(LruCache::new(max_keys)),
        }))
    }
}

impl Handler for MemQuota {
    fn as_quota(&self) -> Option<&dyn QuotaHandler> {
        Some(self)
    }
}

impl MemQuota {
    fn limit_for<'q>(&'q self, def: &'q QuotaDef, dims: &[(&str, String)]) -> (usize, &'q Limit) {
        for (i, (want, limit)) in def.overrides.iter().enumerate() {
            if want
                .iter()
                .all(|(k, v)| dims.iter().any(|(dk, dv)| dk == k && dv == v))
            {
                return (i + 1, limit);
            }
        }
        (0, &def.default)
    }

    fn allocate_now(&self, view: &InstanceView<'_>, args: &QuotaArgs) -> QuotaResult {
        let Some(def) = self.quotas.iter().find(|q| view.instance.is_named(&q.name)) else {
            return QuotaResult {
                status: Status::new(Code::NOT_FOUND, format!("no quota for {}", view.name())),
                ..Default::default()
            };
        };
        if args.amount <= 0 {
            return QuotaResult {
                status: Status::new(Code::INVALID_ARGUMENT, "quota amount must be positive"),
                ..Default::default()
            };
        }
        let mut dims: Vec<(&str, String)> = view
            .map("dimensions")
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        dims.sort();
        let (which, limit) = self.limit_for(def, &dims);
        let mut key = format!("{}#{which}", def.name);
        for (k, v) in &dims {
            key.push_str(&format!("\u{1f}{k}={v}"));
        }
        let now = self.clock.monotonic().0;
        let (bucket, buckets, valid_for) = if limit.window == 0 {
            (0, 1, Duration::ZERO)
        } else {
            let bucket_len = (limit.window / self.buckets_per_window).max(1);
            let bucket = now / bucket_len;
            let valid = match self.algorithm {
                Algorithm::FixedWindow => (bucket + 1) * bucket_len - now,
                Algorithm::RollingWindow => limit.window,
            };
            (
                bucket,
                self.buckets_per_window,
                Duration::from_nanos(valid as i64),
            )
        };
        let counter = {
            let mut all = self.counters.lock();
            all.get_or_insert(key, || Arc::new(Mutex::new(Counter::default())))
                .clone()
        };
        let mut c = counter.lock();
        let available = (limit.max - c.used(bucket, buckets)).max(0);
        let granted = if args.amount <= available {
            args.amount
        } else if args.best_effort {
            available
        } else {
            0
        };
        if granted > 0 {
            c.add(bucket, granted);
        }
        let status = if granted == 0 {
            Status::new(
                Code::RESOURCE_EXHAUSTED,
                format!("quota is exhausted for {}", def.name),
            )
        } else {
            Status::ok()
        };
        QuotaResult {
            status,
            granted,
            valid_duration: valid_for,
        }
    }
}

impl QuotaHandler for MemQuota {
    fn allocate(
        &self,
        view: &InstanceView<'_>,
        args: &QuotaArgs,
        _: &RequestContext<'_>,
    ) -> Poll<QuotaResult> {
        if args.deduplication_id.is_empty() || self.dedup_window == 0 {
            return Poll::Ready(self.allocate_now(view, args));
        }
        let now = self.clock.monotonic();
        let dedup_key = format!("{}\u{1f}{}", view.name(), args.deduplication_id);
        if let Some(prev) = self.dedup.lock().get(&dedup_key)
            && now.since(prev.at).as_nanos() < u128::from(self.dedup_window)
        {
            return Poll::Ready(prev.result.clone());
        }
        let result = self.allocate_now(view, args);
        self.dedup.lock().put(
            dedup_key,
            Dedup {
                at: now,
                result: result.clone(),
            },
        );
        Poll::Ready(result)
    }
}
