//! `redisquota`: rate limits shared by every proxy through a Redis server (Mixer's redisquota
//! adapter). Use `memquota` when one proxy's own count is enough.
//!
//! ```yaml
//! params:
//!   redisServerUrl: redis-release-master:6379   # host:port, or redis://[[user]:password@]host[:port][/db]
//!   connectionPoolSize: 10          # most connections (each a background task); they open on demand
//!   quotas:
//!   - name: requestcountquota.instance.istio-system
//!     maxAmount: 5000
//!     validDuration: 30s            # the window (at least 1ms)
//!     bucketDuration: 9s            # ROLLING_WINDOW only: required, shorter than validDuration
//!     rateLimitAlgorithm: ROLLING_WINDOW   # or FIXED_WINDOW (the default, as in Mixer)
//!     overrides:                    # the first override whose dimensions all match applies
//!     - dimensions: { destination: ratings, source: reviews }
//!       maxAmount: 50
//!   # extensions (not in Mixer's params):
//!   minDeduplicationDuration: 1s    # a repeated deduplication id within this gets the first answer
//!   connectTimeout: 1s
//!   requestTimeout: 1s              # a round trip (write and read) to Redis
//!   queueSize: 1024                 # allocations waiting for a connection; beyond: fail open
//!   keyPrefix: mixer:redisquota     # namespace of the keys in Redis
//! ```
//!
//! # How it works
//!
//! The core does no I/O and proxies offer no Redis client, so the handler owns its connections:
//! tasks on the platform's [`BackgroundExecutor`](mixer_core::pal::BackgroundExecutor) that speak
//! RESP over TCP (see `redisquota/conn.rs`). `allocate` queues the request (a short lock, never
//! blocking on I/O) and returns [`Poll::Pending`]; a connection task runs the quota's Lua script
//! (`EVALSHA`, scripts loaded with `SCRIPT LOAD` and reloaded on `NOSCRIPT`) and completes the
//! request from its thread. The scripts (`redisquota/scripts.rs`) count on the server's clock,
//! atomically, so no number of proxies grants past a limit.
//!
//! Keys: `<keyPrefix>:{<quota>|<algorithm><window>[/<bucket>]|<dim>=<value>,...}` for counters
//! (dimensions sorted by name; `%`, `{`, `}`, `|`, `,`, `=`, `:` and control bytes
//! percent-escaped), and the same followed by `:dedup:<id>` for deduplication records, so both
//! keys of a request share a Redis Cluster hash slot.
//!
//! Quota fails open, as Mixer did: when Redis cannot answer (connection refused, timeout, error or
//! malformed reply, queue full) the request is granted, valid for at most one second, and
//! [`RedisQuotaStats::failures`] counts it.
//!
//! [`QuotaHandler::prefetch`] is true: the pipeline answers quota checks from its token cache and
//! calls `allocate` (best effort: "grant what is left") only to prefetch tokens.

mod conn;
mod resp;
mod scripts;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use mixer_attr::Duration;
use mixer_core::adapter::{
    Adapter, AdapterError, Handler, HandlerConfig, QuotaArgs, QuotaHandler, QuotaResult,
    RequestContext,
};
use mixer_core::instance::InstanceView;
use mixer_core::pending::{Poll, pending};
use mixer_core::{Code, Status};
use serde::Deserialize;

pub use conn::RedisQuotaStats;
use conn::{Job, Options, Pool, Script, Target, fail_open_result};

use crate::duration_param;

/// Longest validity of a fail-open grant.
const FAIL_OPEN_VALIDITY: StdDuration = StdDuration::from_secs(1);
/// Most buckets in a rolling window (each is a hash field read on every allocation).
const MAX_BUCKETS: u64 = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OverrideParams {
    #[serde(default)]
    dimensions: HashMap<String, String>,
    max_amount: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QuotaParams {
    name: String,
    max_amount: i64,
    #[serde(default)]
    valid_duration: Option<String>,
    #[serde(default)]
    bucket_duration: Option<String>,
    #[serde(default)]
    rate_limit_algorithm: Option<String>,
    #[serde(default)]
    overrides: Vec<OverrideParams>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    redis_server_url: Option<String>,
    #[serde(default)]
    connection_pool_size: Option<i64>,
    #[serde(default)]
    quotas: Vec<QuotaParams>,
    #[serde(default)]
    min_deduplication_duration: Option<String>,
    #[serde(default)]
    connect_timeout: Option<String>,
    #[serde(default)]
    request_timeout: Option<String>,
    #[serde(default)]
    queue_size: Option<i64>,
    #[serde(default)]
    key_prefix: Option<String>,
}

/// How a quota's window is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Counts reset at window boundaries (aligned on the Redis server's clock).
    FixedWindow,
    /// Counts over the last window, in buckets of `bucketDuration`.
    RollingWindow,
}

#[derive(Debug)]
struct QuotaDef {
    name: Arc<str>,
    max: i64,
    /// Overrides: sorted (dimension, value) pairs and the max amount.
    overrides: Vec<(Vec<(String, String)>, i64)>,
    algorithm: Algorithm,
    window_ms: u64,
    /// Zero for a fixed window.
    bucket_ms: u64,
    /// The key part naming the algorithm and durations (a config change starts new counters).
    shape: String,
}

/// The `redisquota` adapter. Every handler it builds adds to the same [`RedisQuotaStats`]
/// ([`RedisQuotaAdapter::stats`]), so a host that registers its own instance can export them.
#[derive(Debug, Default, Clone)]
pub struct RedisQuotaAdapter {
    stats: Arc<RedisQuotaStats>,
}

impl RedisQuotaAdapter {
    /// An adapter with fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of every handler this adapter built.
    pub fn stats(&self) -> Arc<RedisQuotaStats> {
        self.stats.clone()
    }

    /// Builds a handler (what [`Adapter::build`] does, with the concrete type).
    pub fn build_handler(
        &self,
        config: &HandlerConfig<'_>,
    ) -> Result<Arc<RedisQuota>, AdapterError> {
        let p: Params = serde_json::from_value(config.params.clone())
            .map_err(|e| AdapterError::new(e.to_string()))?;
        let url = p
            .redis_server_url
            .as_deref()
            .map(str::trim)
            .unwrap_or_default();
        if url.is_empty() {
            return Err(AdapterError::field(
                "redisServerUrl",
                "is required (host:port of the Redis server)",
            ));
        }
        let target = parse_url(url).map_err(|m| AdapterError::field("redisServerUrl", m))?;
        let pool_size = match p.connection_pool_size {
            None | Some(0) => 10,
            Some(n @ 1..=256) => n as usize,
            Some(n) => {
                return Err(AdapterError::field(
                    "connectionPoolSize",
                    format!("{n} is not between 1 and 256"),
                ));
            }
        };
        let queue_size = match p.queue_size {
            None => 1024,
            Some(n @ 1..=1_000_000) => n as usize,
            Some(n) => {
                return Err(AdapterError::field(
                    "queueSize",
                    format!("{n} is not between 1 and 1000000"),
                ));
            }
        };
        let positive = |field: &str,
                        v: Option<&str>,
                        default: StdDuration|
         -> Result<StdDuration, AdapterError> {
            let d = duration_param::parse(field, v, Duration::from_std(default))?;
            d.to_std()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| AdapterError::field(field, "must be positive"))
        };
        let connect_timeout = positive(
            "connectTimeout",
            p.connect_timeout.as_deref(),
            StdDuration::from_secs(1),
        )?;
        let request_timeout = positive(
            "requestTimeout",
            p.request_timeout.as_deref(),
            StdDuration::from_secs(1),
        )?;
        let dedup = duration_param::parse(
            "minDeduplicationDuration",
            p.min_deduplication_duration.as_deref(),
            Duration::from_secs(1),
        )?;
        let dedup_ms = millis(dedup.to_std().unwrap_or_default());
        let key_prefix = p
            .key_prefix
            .unwrap_or_else(|| "mixer:redisquota".to_string());
        if key_prefix.is_empty() || key_prefix.len() > 256 || key_prefix.contains(['{', '}']) {
            return Err(AdapterError::field(
                "keyPrefix",
                "must be 1 to 256 bytes without `{` or `}`",
            ));
        }

        let mut quotas = Vec::new();
        for (i, q) in p.quotas.into_iter().enumerate() {
            quotas.push(quota_def(i, q)?);
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
        let opts = Options {
            pool_size,
            queue_size,
            connect_timeout,
            request_timeout,
        };
        let pool = Pool::start(
            config.name,
            target,
            opts,
            self.stats.clone(),
            config.platform.background.clone(),
        );
        Ok(Arc::new(RedisQuota {
            quotas,
            dedup_ms,
            key_prefix,
            pool,
        }))
    }
}

fn millis(d: StdDuration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn quota_def(i: usize, q: QuotaParams) -> Result<QuotaDef, AdapterError> {
    let field = |f: &str| format!("quotas[{i}].{f}");
    if q.name.is_empty() {
        return Err(AdapterError::field(field("name"), "is required"));
    }
    if q.max_amount < 0 {
        return Err(AdapterError::field(
            field("maxAmount"),
            "must not be negative",
        ));
    }
    let algorithm = match q.rate_limit_algorithm.as_deref().unwrap_or("FIXED_WINDOW") {
        "FIXED_WINDOW" => Algorithm::FixedWindow,
        "ROLLING_WINDOW" => Algorithm::RollingWindow,
        other => {
            return Err(AdapterError::field(
                field("rateLimitAlgorithm"),
                format!("`{other}` is not FIXED_WINDOW or ROLLING_WINDOW"),
            ));
        }
    };
    let window = duration_param::parse(
        &field("validDuration"),
        q.valid_duration.as_deref(),
        Duration::ZERO,
    )?;
    let window_ms = millis(window.to_std().unwrap_or_default());
    if window_ms == 0 {
        return Err(AdapterError::field(
            field("validDuration"),
            "is required and must be at least 1ms",
        ));
    }
    let bucket_ms = match (algorithm, q.bucket_duration.as_deref()) {
        (Algorithm::FixedWindow, _) => 0,
        (Algorithm::RollingWindow, None) => {
            return Err(AdapterError::field(
                field("bucketDuration"),
                "is required for ROLLING_WINDOW",
            ));
        }
        (Algorithm::RollingWindow, Some(b)) => {
            let d = duration_param::parse(&field("bucketDuration"), Some(b), Duration::ZERO)?;
            let ms = millis(d.to_std().unwrap_or_default());
            if ms == 0 {
                return Err(AdapterError::field(
                    field("bucketDuration"),
                    "must be at least 1ms",
                ));
            }
            if ms >= window_ms {
                return Err(AdapterError::field(
                    field("bucketDuration"),
                    format!(
                        "must be shorter than validDuration ({b} >= {})",
                        q.valid_duration.as_deref().unwrap_or("")
                    ),
                ));
            }
            if window_ms.div_ceil(ms) > MAX_BUCKETS {
                return Err(AdapterError::field(
                    field("bucketDuration"),
                    format!("makes more than {MAX_BUCKETS} buckets per window"),
                ));
            }
            ms
        }
    };
    let mut overrides = Vec::new();
    for (j, o) in q.overrides.into_iter().enumerate() {
        if o.max_amount < 0 {
            return Err(AdapterError::field(
                field(&format!("overrides[{j}].maxAmount")),
                "must not be negative",
            ));
        }
        if o.dimensions.is_empty() {
            return Err(AdapterError::field(
                field(&format!("overrides[{j}].dimensions")),
                "must name at least one dimension",
            ));
        }
        let mut dims: Vec<(String, String)> = o.dimensions.into_iter().collect();
        dims.sort();
        overrides.push((dims, o.max_amount));
    }
    let shape = match algorithm {
        Algorithm::FixedWindow => format!("F{window_ms}"),
        Algorithm::RollingWindow => format!("R{window_ms}/{bucket_ms}"),
    };
    Ok(QuotaDef {
        name: q.name.into(),
        max: q.max_amount,
        overrides,
        algorithm,
        window_ms,
        bucket_ms,
        shape,
    })
}

/// Parses `host:port` or `redis://[[user]:password@]host[:port][/db]`.
fn parse_url(url: &str) -> Result<Target, String> {
    let (rest, had_scheme) = match url.split_once("://") {
        Some(("redis", rest)) => (rest, true),
        Some((scheme, _)) => {
            return Err(format!(
                "scheme `{scheme}://` is not supported (use redis:// or host:port)"
            ));
        }
        None => (url, false),
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, r)) if had_scheme => (Some(u), r),
        Some(_) => return Err("credentials need the redis:// form".into()),
        None => (None, rest),
    };
    let (hostport, db) = match rest.split_once('/') {
        Some((h, "")) => (h, 0),
        Some((h, db)) => (
            h,
            db.parse::<u32>()
                .map_err(|_| format!("`{db}` is not a database number"))?,
        ),
        None => (rest, 0),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("unterminated `[` in the address")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{p}` is not a port"))?,
        None if had_scheme => 6379,
        None => return Err(format!("`{url}` is not host:port")),
    };
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some(("", p)) => (None, Some(p.to_string())),
            Some((user, p)) => (Some(user.to_string()), Some(p.to_string())),
            None => (None, Some(u.to_string())),
        },
    };
    Ok(Target {
        addr,
        username,
        password,
        db,
    })
}

impl Adapter for RedisQuotaAdapter {
    fn name(&self) -> &'static str {
        "redisquota"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["quota"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(self.build_handler(config)?)
    }
}

/// A built redisquota handler. Dropping it stops its connections.
pub struct RedisQuota {
    quotas: Vec<QuotaDef>,
    dedup_ms: u64,
    key_prefix: String,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for RedisQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuota")
            .field("quotas", &self.quotas)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisQuota {
    fn drop(&mut self) {
        self.pool.shutdown();
    }
}

impl Handler for RedisQuota {
    fn as_quota(&self) -> Option<&dyn QuotaHandler> {
        Some(self)
    }
}

/// Appends `s` with the key's separators percent-escaped.
fn push_escaped(key: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, '%' | '{' | '}' | '|' | ',' | '=' | ':') || c.is_control() {
            let mut b = [0; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                key.push_str(&format!("%{byte:02X}"));
            }
        } else {
            key.push(c);
        }
    }
}

impl RedisQuota {
    /// The counters this handler adds to (shared with every handler of its adapter).
    pub fn stats(&self) -> &RedisQuotaStats {
        self.pool.stats()
    }

    fn answer_now(status: Status) -> Poll<QuotaResult> {
        Poll::Ready(QuotaResult {
            status,
            ..Default::default()
        })
    }
}

impl QuotaHandler for RedisQuota {
    fn allocate(
        &self,
        view: &InstanceView<'_>,
        args: &QuotaArgs,
        _: &RequestContext<'_>,
    ) -> Poll<QuotaResult> {
        let Some(def) = self.quotas.iter().find(|q| view.instance.is_named(&q.name)) else {
            return Self::answer_now(Status::new(
                Code::NOT_FOUND,
                format!("no quota for {}", view.name()),
            ));
        };
        if args.amount <= 0 {
            return Self::answer_now(Status::new(
                Code::INVALID_ARGUMENT,
                "quota amount must be positive",
            ));
        }
        let mut dims: Vec<(&str, String)> = view
            .map("dimensions")
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        dims.sort();
        let max = def
            .overrides
            .iter()
            .find(|(want, _)| {
                want.iter()
                    .all(|(k, v)| dims.iter().any(|(dk, dv)| dk == k && dv == v))
            })
            .map_or(def.max, |(_, max)| *max);

        let mut tag = String::with_capacity(64);
        push_escaped(&mut tag, &def.name);
        tag.push('|');
        tag.push_str(&def.shape);
        tag.push('|');
        for (i, (k, v)) in dims.iter().enumerate() {
            if i > 0 {
                tag.push(',');
            }
            push_escaped(&mut tag, k);
            tag.push('=');
            push_escaped(&mut tag, v);
        }
        let counter = format!("{}:{{{tag}}}", self.key_prefix);
        let mut keys = Vec::with_capacity(2);
        let dedup_ms = if !args.deduplication_id.is_empty() && self.dedup_ms > 0 {
            let mut dedup = format!("{counter}:dedup:");
            push_escaped(&mut dedup, &args.deduplication_id);
            keys.push(counter);
            keys.push(dedup);
            self.dedup_ms
        } else {
            keys.push(counter);
            0
        };
        let script = match def.algorithm {
            Algorithm::FixedWindow => Script::Fixed,
            Algorithm::RollingWindow => Script::Rolling,
        };
        let fail_open_valid = FAIL_OPEN_VALIDITY.min(StdDuration::from_millis(def.window_ms));
        let (done, result) = pending();
        let job = Job {
            script,
            keys,
            args: [
                args.amount.to_string(),
                max.to_string(),
                def.window_ms.to_string(),
                def.bucket_ms.to_string(),
                if args.best_effort { "1" } else { "0" }.to_string(),
                dedup_ms.to_string(),
            ],
            amount: args.amount,
            fail_open_valid,
            quota: def.name.clone(),
            done,
        };
        if self.pool.submit(job) {
            Poll::Pending(result)
        } else {
            // The queue is full (or the pool could not start a connection): fail open now.
            Poll::Ready(fail_open_result(args.amount, fail_open_valid))
        }
    }

    fn prefetch(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("redis-release-master:6379").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.db, t.password),
            ("redis-release-master:6379", 0, None)
        );
        let t = parse_url("redis://u:p@h/3").unwrap();
        assert_eq!(
            (
                t.addr.as_str(),
                t.db,
                t.username.as_deref(),
                t.password.as_deref()
            ),
            ("h:6379", 3, Some("u"), Some("p"))
        );
        let t = parse_url("redis://:secret@[::1]:7000").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.username, t.password.as_deref()),
            ("[::1]:7000", None, Some("secret"))
        );
        for bad in [
            "localhost",
            "rediss://h:1",
            "h:0",
            "h:x",
            ":6379",
            "redis://h/x",
            "p@h:1",
            "redis://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_escape_separators() {
        let mut k = String::new();
        push_escaped(&mut k, "a{b}|c,d=e:f%g\u{1}h");
        assert_eq!(k, "a%7Bb%7D%7Cc%2Cd%3De%3Af%25g%01h");
    }
}
