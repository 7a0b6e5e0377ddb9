//! The handler's connections: a bounded queue of allocation jobs served by up to
//! `connectionPoolSize` connection tasks on the library's background executor.
//!
//! A connection task takes a batch of queued jobs, pipelines them (one write, then one reply per
//! job) and completes each job's [`Completer`]. It connects on first use, loads the scripts
//! (`SCRIPT LOAD`) on every new connection, reloads them when the server answers `NOSCRIPT`
//! (a restarted or flushed server) and retries those jobs once. Network errors, timeouts and
//! malformed replies drop the connection and answer the affected jobs "granted" (fail open).
//! Failed connection attempts back off exponentially with jitter; while backing off, jobs are
//! failed open at once rather than queued behind a dead server.
//!
//! The first task starts with the handler; more start (up to the pool size) when a task finds the
//! queue still non-empty after taking its batch and no task idle. Tasks stop when the handler is
//! dropped, answering what is left in the queue (fail open).

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mixer_core::adapter::QuotaResult;
use mixer_core::pal::BackgroundExecutor;
use mixer_core::pending::Completer;
use mixer_core::{Code, Status};
use parking_lot::{Condvar, Mutex};

use super::resp::{Connection, Reply, RespError, encode};
use super::scripts;

/// Most jobs pipelined in one round trip.
const MAX_BATCH: usize = 64;
/// First reconnect delay; doubles per failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Counters of a redisquota handler (or of every handler of one adapter instance), for
/// telemetry. All counters only grow.
#[derive(Debug, Default)]
pub struct RedisQuotaStats {
    /// Allocations sent to Redis (including ones that then failed).
    pub requests: AtomicU64,
    /// Allocations granted without Redis's answer (fail open): network errors, timeouts, error
    /// or malformed replies, a full queue, backing off after failed connection attempts.
    pub failures: AtomicU64,
    /// Of `failures`, those refused at once: the queue was full (or no connection task runs).
    pub queue_full: AtomicU64,
    /// Connections established (a growing number under a stable server means reconnects).
    pub connects: AtomicU64,
    /// Connection attempts that failed (refused, timed out, handshake failed).
    pub connect_failures: AtomicU64,
    /// Scripts loaded (`SCRIPT LOAD`), on connect and after `NOSCRIPT`.
    pub script_loads: AtomicU64,
}

impl RedisQuotaStats {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which script a job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Script {
    Fixed = 0,
    Rolling = 1,
}

/// One allocation to run on Redis.
pub(crate) struct Job {
    pub script: Script,
    /// The counter key and, with deduplication, the deduplication key.
    pub keys: Vec<String>,
    /// amount, max, window ms, bucket ms, best effort, dedup ms.
    pub args: [String; 6],
    pub amount: i64,
    /// Validity of a fail-open grant.
    pub fail_open_valid: Duration,
    pub quota: Arc<str>,
    pub done: Completer<QuotaResult>,
}

impl Job {
    /// Answers "granted" without Redis (fail open).
    fn fail_open(self, stats: &RedisQuotaStats) {
        RedisQuotaStats::inc(&stats.failures);
        let result = fail_open_result(self.amount, self.fail_open_valid);
        self.done.complete(result);
    }
}

/// What a request is answered when Redis cannot be asked.
pub(crate) fn fail_open_result(amount: i64, valid: Duration) -> QuotaResult {
    QuotaResult {
        status: Status::ok(),
        granted: amount,
        valid_duration: mixer_attr::Duration::from_std(valid),
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// `host:port`
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub pool_size: usize,
    pub queue_size: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Tasks started and not yet finished.
    tasks: usize,
    /// Tasks waiting for work.
    idle: usize,
    shutdown: bool,
}

struct Backoff {
    failures: u32,
    next_attempt: Option<Instant>,
}

/// State shared by the handler and its connection tasks.
pub(crate) struct Pool {
    target: Target,
    opts: Options,
    queue: Mutex<Queue>,
    wake: Condvar,
    backoff: Mutex<Backoff>,
    stats: Arc<RedisQuotaStats>,
    executor: Arc<dyn BackgroundExecutor>,
    name: String,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target.addr)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool with its first connection task started.
    pub(crate) fn start(
        name: &str,
        target: Target,
        opts: Options,
        stats: Arc<RedisQuotaStats>,
        executor: Arc<dyn BackgroundExecutor>,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            target,
            opts,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                tasks: 1,
                idle: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            backoff: Mutex::new(Backoff {
                failures: 0,
                next_attempt: None,
            }),
            stats,
            executor,
            name: format!("redisquota {name}"),
        });
        pool.spawn_task();
        pool
    }

    pub(crate) fn stats(&self) -> &Arc<RedisQuotaStats> {
        &self.stats
    }

    /// Queues `job`; never blocks beyond a short lock. Returns false when the job was refused (a
    /// full queue, a stopped pool, a pool with no task): it is then answered "granted" (fail
    /// open) and counted, and the caller should answer the same at once.
    pub(crate) fn submit(&self, job: Job) -> bool {
        let mut q = self.queue.lock();
        if q.shutdown || q.tasks == 0 || q.jobs.len() >= self.opts.queue_size {
            drop(q);
            RedisQuotaStats::inc(&self.stats.queue_full);
            job.fail_open(&self.stats);
            return false;
        }
        q.jobs.push_back(job);
        drop(q);
        self.wake.notify_one();
        true
    }

    /// Stops the tasks (they finish their current batch, then answer what is queued).
    pub(crate) fn shutdown(&self) {
        self.queue.lock().shutdown = true;
        self.wake.notify_all();
    }

    /// Starts one connection task (the caller counted it in `tasks`).
    fn spawn_task(self: &Arc<Self>) {
        let task = Task { pool: self.clone() };
        self.executor
            .spawn(&self.name, Box::new(move || task.run()));
    }

    /// Takes the next batch, waiting for work; `None` when the pool stopped.
    fn next_batch(self: &Arc<Self>) -> Option<Vec<Job>> {
        let mut q = self.queue.lock();
        while q.jobs.is_empty() && !q.shutdown {
            q.idle += 1;
            self.wake.wait(&mut q);
            q.idle -= 1;
        }
        if q.shutdown {
            return None;
        }
        let n = q.jobs.len().min(MAX_BATCH);
        let batch: Vec<Job> = q.jobs.drain(..n).collect();
        let grow = !q.jobs.is_empty() && q.idle == 0 && q.tasks < self.opts.pool_size;
        if grow {
            q.tasks += 1;
        }
        drop(q);
        if grow {
            self.spawn_task();
        }
        Some(batch)
    }

    /// Whether a connection attempt may be made now.
    fn may_connect(&self, now: Instant) -> bool {
        self.backoff.lock().next_attempt.is_none_or(|t| now >= t)
    }

    fn connected(&self) {
        let mut b = self.backoff.lock();
        b.failures = 0;
        b.next_attempt = None;
    }

    fn connect_failed(&self, now: Instant) {
        let mut b = self.backoff.lock();
        let exp = BACKOFF_BASE.saturating_mul(1u32 << b.failures.min(16));
        let delay = exp.min(BACKOFF_MAX);
        // Equal jitter: half fixed, half random, so proxies do not reconnect in lockstep.
        let half = delay / 2;
        let jitter = Duration::from_nanos(
            random() % (u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1)),
        );
        b.next_attempt = Some(now + half + jitter);
        b.failures = b.failures.saturating_add(1);
    }

    /// Opens a connection: connect, authenticate, select the database, load the scripts.
    fn open(&self) -> Result<Live, RespError> {
        let mut conn = Connection::connect(&self.target.addr, self.opts.connect_timeout)?;
        let deadline = Instant::now() + self.opts.request_timeout;
        if let Some(password) = &self.target.password {
            let reply = match &self.target.username {
                Some(user) => {
                    conn.call(&[b"AUTH", user.as_bytes(), password.as_bytes()], deadline)?
                }
                None => conn.call(&[b"AUTH", password.as_bytes()], deadline)?,
            };
            expect_ok(reply, "AUTH")?;
        }
        if self.target.db != 0 {
            let db = self.target.db.to_string();
            expect_ok(conn.call(&[b"SELECT", db.as_bytes()], deadline)?, "SELECT")?;
        }
        let mut live = Live {
            conn,
            shas: [String::new(), String::new()],
        };
        self.load_scripts(&mut live, deadline)?;
        Ok(live)
    }

    fn load_scripts(&self, live: &mut Live, deadline: Instant) -> Result<(), RespError> {
        for (i, body) in [scripts::FIXED_WINDOW, scripts::ROLLING_WINDOW]
            .into_iter()
            .enumerate()
        {
            let reply = live
                .conn
                .call(&[b"SCRIPT", b"LOAD", body.as_bytes()], deadline)?;
            RedisQuotaStats::inc(&self.stats.script_loads);
            match reply {
                Reply::Bulk(Some(sha))
                    if sha.len() == 40 && sha.iter().all(u8::is_ascii_hexdigit) =>
                {
                    live.shas[i] = String::from_utf8_lossy(&sha).into_owned();
                }
                other => {
                    return Err(RespError::Malformed(format!(
                        "SCRIPT LOAD answered {}",
                        describe(&other)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Runs `batch` on `live`. On a connection-level error, answers the unanswered jobs (fail
    /// open) and returns the error: the connection must be dropped.
    fn run_batch(&self, live: &mut Live, batch: Vec<Job>) -> Result<(), RespError> {
        let retry = self.exchange(live, batch)?;
        if retry.is_empty() {
            return Ok(());
        }
        // NOSCRIPT: the server lost the scripts (restart, SCRIPT FLUSH). Reload, retry once.
        let deadline = Instant::now() + self.opts.request_timeout;
        if let Err(e) = self.load_scripts(live, deadline) {
            for job in retry {
                job.fail_open(&self.stats);
            }
            return Err(e);
        }
        let again = self.exchange(live, retry)?;
        for job in again {
            job.fail_open(&self.stats);
        }
        Ok(())
    }

    /// Pipelines `batch`; returns the jobs answered `NOSCRIPT`.
    fn exchange(&self, live: &mut Live, batch: Vec<Job>) -> Result<Vec<Job>, RespError> {
        let mut out = Vec::with_capacity(batch.len() * 256);
        for job in &batch {
            RedisQuotaStats::inc(&self.stats.requests);
            let sha = &live.shas[job.script as usize];
            let nkeys = job.keys.len().to_string();
            let mut args: Vec<&[u8]> = Vec::with_capacity(3 + job.keys.len() + job.args.len());
            args.extend([b"EVALSHA".as_slice(), sha.as_bytes(), nkeys.as_bytes()]);
            args.extend(job.keys.iter().map(|k| k.as_bytes()));
            args.extend(job.args.iter().map(|a| a.as_bytes()));
            encode(&mut out, &args);
        }
        let deadline = Instant::now() + self.opts.request_timeout;
        let mut jobs = batch.into_iter();
        if let Err(e) = live.conn.send(&out, deadline) {
            for job in jobs {
                job.fail_open(&self.stats);
            }
            return Err(e);
        }
        let mut retry = Vec::new();
        while let Some(job) = jobs.next() {
            match live.conn.read(deadline) {
                Ok(Reply::Error(msg)) if msg.starts_with("NOSCRIPT") => retry.push(job),
                Ok(reply) => match parse_answer(&reply, job.amount) {
                    Some((granted, valid)) => {
                        let status = if granted > 0 {
                            Status::ok()
                        } else {
                            Status::new(
                                Code::RESOURCE_EXHAUSTED,
                                format!("quota is exhausted for {}", job.quota),
                            )
                        };
                        job.done.complete(QuotaResult {
                            status,
                            granted,
                            valid_duration: valid,
                        });
                    }
                    // An error reply (OOM, BUSY, READONLY...) or an answer of the wrong shape:
                    // the connection is still in sync, only this job fails.
                    None => job.fail_open(&self.stats),
                },
                Err(e) => {
                    job.fail_open(&self.stats);
                    for job in jobs {
                        job.fail_open(&self.stats);
                    }
                    for job in retry {
                        job.fail_open(&self.stats);
                    }
                    return Err(e);
                }
            }
        }
        Ok(retry)
    }
}

/// A connection with its scripts loaded.
struct Live {
    conn: Connection,
    /// SHA1 of the fixed- and rolling-window scripts, as the server reported them.
    shas: [String; 2],
}

/// One connection task. Dropping it (normally, or unrun because the executor refused it) takes
/// it out of the count; the last one out answers whatever is still queued.
struct Task {
    pool: Arc<Pool>,
}

impl Task {
    fn run(self) {
        let pool = &self.pool;
        let mut live: Option<Live> = None;
        while let Some(batch) = pool.next_batch() {
            if live.is_none() {
                let now = Instant::now();
                if !pool.may_connect(now) {
                    for job in batch {
                        job.fail_open(&pool.stats);
                    }
                    continue;
                }
                match pool.open() {
                    Ok(l) => {
                        RedisQuotaStats::inc(&pool.stats.connects);
                        pool.connected();
                        live = Some(l);
                    }
                    Err(_) => {
                        RedisQuotaStats::inc(&pool.stats.connect_failures);
                        pool.connect_failed(Instant::now());
                        for job in batch {
                            job.fail_open(&pool.stats);
                        }
                        continue;
                    }
                }
            }
            if let Some(l) = live.as_mut()
                && pool.run_batch(l, batch).is_err()
            {
                live = None;
            }
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let left = {
            let mut q = self.pool.queue.lock();
            q.tasks = q.tasks.saturating_sub(1);
            if q.tasks == 0 {
                std::mem::take(&mut q.jobs)
            } else {
                VecDeque::new()
            }
        };
        for job in left {
            job.fail_open(&self.pool.stats);
        }
    }
}

fn expect_ok(reply: Reply, what: &str) -> Result<(), RespError> {
    match reply {
        Reply::Simple(s) if s == "OK" => Ok(()),
        other => Err(RespError::Malformed(format!(
            "{what} answered {}",
            describe(&other)
        ))),
    }
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Error(e) => format!("error `{}`", e.chars().take(200).collect::<String>()),
        Reply::Simple(_) => "a status".into(),
        Reply::Int(_) => "an integer".into(),
        Reply::Bulk(_) => "a bulk string".into(),
        Reply::Array(_) => "an array".into(),
    }
}

/// `{granted, valid_ms, deduplicated}` from a script, checked: `0 <= granted <= amount`.
fn parse_answer(reply: &Reply, amount: i64) -> Option<(i64, mixer_attr::Duration)> {
    let Reply::Array(Some(items)) = reply else {
        return None;
    };
    match items.as_slice() {
        [Reply::Int(granted), Reply::Int(valid_ms), ..] if (0..=amount).contains(granted) => {
            Some((
                *granted,
                mixer_attr::Duration::from_millis((*valid_ms).max(0)),
            ))
        }
        _ => None,
    }
}

/// A random number for jitter (std's randomly keyed hasher over a counter and the time).
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked() {
        let ok = Reply::Array(Some(vec![Reply::Int(3), Reply::Int(1500), Reply::Int(0)]));
        assert_eq!(
            parse_answer(&ok, 5),
            Some((3, mixer_attr::Duration::from_millis(1500)))
        );
        assert_eq!(parse_answer(&ok, 2), None, "granted more than asked");
        let neg = Reply::Array(Some(vec![Reply::Int(-1), Reply::Int(1)]));
        assert_eq!(parse_answer(&neg, 5), None);
        assert_eq!(parse_answer(&Reply::Int(1), 5), None);
        assert_eq!(
            parse_answer(&Reply::Array(Some(vec![Reply::Int(1)])), 5),
            None
        );
        let past = Reply::Array(Some(vec![Reply::Int(1), Reply::Int(-7)]));
        assert_eq!(
            parse_answer(&past, 5),
            Some((1, mixer_attr::Duration::ZERO))
        );
    }

    #[test]
    fn jitter_varies() {
        let a: Vec<u64> = (0..8).map(|_| random()).collect();
        assert!(a.windows(2).any(|w| w[0] != w[1]));
    }
}
