//! The one durable websocket to the autoscaler: a blocking client on a background thread, fed
//! through a merged per-revision outbox and woken through a bounded channel.
//!
//! The request path never touches the socket. Stats go into the [`Outbox`] (one entry per
//! revision: a new stat merges into the waiting one, so memory is bounded by the number of
//! revisions, whether the socket is up or not), then a wake-up goes through a
//! `sync_channel(1)` (a full channel means a wake-up is already pending). The thread drains the
//! outbox into one `WireStatMessages` frame per wake-up, reads the socket with a short timeout
//! to notice a close (1012 when the autoscaler restarts), and reconnects with jittered
//! exponential backoff. When the handler goes away its sender is dropped: the thread writes
//! what is left (if connected), closes the socket and ends.

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message as _;
use tungstenite::Message;
use tungstenite::protocol::WebSocket;

use crate::proto::{Stat, WireStatMessage, WireStatMessages};
use crate::stats::{self, Counters};

/// One revision's stat waiting to be written.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Pending {
    pub concurrency: f64,
    pub requests: f64,
    pub uptime: f64,
    /// The entry carries a poke (counted in `pokes_sent` when written).
    pub poke: bool,
}

impl Pending {
    /// Merges a newer stat in: the highest concurrency (the autoscaler must not under-scale from
    /// a stat that sat out a disconnection), the sum of request counts, the latest uptime.
    fn merge(&mut self, newer: Pending) {
        self.concurrency = self.concurrency.max(newer.concurrency);
        self.requests += newer.requests;
        self.uptime = self.uptime.max(newer.uptime);
        self.poke |= newer.poke;
    }
}

type Key = (Arc<str>, Arc<str>);

/// Stats waiting to be written, merged per revision.
#[derive(Debug)]
pub(crate) struct Outbox {
    entries: Mutex<HashMap<Key, Pending>>,
    cap: usize,
    counters: Arc<Counters>,
}

impl Outbox {
    pub fn new(cap: usize, counters: Arc<Counters>) -> Outbox {
        Outbox {
            entries: Mutex::new(HashMap::new()),
            cap,
            counters,
        }
    }

    /// Adds (merges) a stat for `namespace`/`name`.
    pub fn push(&self, namespace: &Arc<str>, name: &Arc<str>, stat: Pending) {
        let mut e = self.entries.lock();
        let key = (namespace.clone(), name.clone());
        let full = e.len() >= self.cap;
        match e.get_mut(&key) {
            Some(p) => p.merge(stat),
            None if full => stats::inc(&self.counters.outbox_dropped),
            None => {
                e.insert(key, stat);
            }
        }
        stats::set(&self.counters.outbox_revisions, e.len() as u64);
    }

    fn take(&self) -> Vec<(Key, Pending)> {
        let mut e = self.entries.lock();
        let out: Vec<_> = e.drain().collect();
        stats::set(&self.counters.outbox_revisions, 0);
        out
    }

    /// Puts back stats that could not be written (merging with what arrived meanwhile).
    fn put_back(&self, batch: Vec<(Key, Pending)>) {
        let mut e = self.entries.lock();
        for (key, older) in batch {
            let full = e.len() >= self.cap;
            match e.get_mut(&key) {
                Some(newer) => {
                    let mut merged = older;
                    merged.merge(*newer);
                    *newer = merged;
                }
                None if full => stats::inc(&self.counters.outbox_dropped),
                None => {
                    e.insert(key, older);
                }
            }
        }
        stats::set(&self.counters.outbox_revisions, e.len() as u64);
    }

    /// Number of revisions waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub(crate) struct ClientConfig {
    pub url: String,
    /// `host:port` to resolve and dial.
    pub authority: String,
    pub pod_name: String,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
}

/// How often the thread looks at the socket for a close while idle.
const POLL: Duration = Duration::from_millis(25);
/// Read timeout while polling the socket (the socket is otherwise write-only).
const READ_POLL: Duration = Duration::from_millis(1);
/// Write timeout: a frame is small; a stuck autoscaler counts as a dropped connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

enum SessionEnd {
    /// The handler went away: stop.
    Shutdown,
    /// The connection dropped or the server closed it: reconnect.
    Dropped,
}

/// A small xorshift generator for backoff jitter (seeded from the clock and thread).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Jitter(t | 1)
    }
    /// A factor in [0.5, 1.0).
    fn factor(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        0.5 + (x >> 11) as f64 / (1u64 << 53) as f64 / 2.0
    }
}

/// The client thread's body.
pub(crate) fn run(
    config: ClientConfig,
    outbox: Arc<Outbox>,
    wake: Receiver<()>,
    counters: Arc<Counters>,
) {
    let mut backoff = config.min_backoff;
    let mut jitter = Jitter::new();
    let mut connected_before = false;
    loop {
        match connect(&config) {
            Ok(mut ws) => {
                stats::inc(&counters.connects);
                if connected_before {
                    stats::inc(&counters.reconnects);
                }
                connected_before = true;
                backoff = config.min_backoff;
                let end = session(&mut ws, &config, &outbox, &wake, &counters);
                match end {
                    SessionEnd::Shutdown => {
                        let _ = ws.close(None);
                        let _ = ws.flush();
                        return;
                    }
                    SessionEnd::Dropped => stats::inc(&counters.disconnects),
                }
            }
            Err(_) => stats::inc(&counters.connect_failures),
        }
        // Back off (jittered), waking early only to stop.
        let deadline = Instant::now() + backoff.mul_f64(jitter.factor());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match wake.recv_timeout(left) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

fn connect(config: &ClientConfig) -> Result<WebSocket<TcpStream>, String> {
    let addr = config
        .authority
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{}: no address", config.authority))?;
    let stream =
        TcpStream::connect_timeout(&addr, config.connect_timeout).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(config.connect_timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let (ws, _) =
        tungstenite::client::client(config.url.as_str(), stream).map_err(|e| e.to_string())?;
    ws.get_ref()
        .set_read_timeout(Some(READ_POLL))
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Encodes one frame of every waiting stat.
fn encode(batch: &[(Key, Pending)], pod_name: &str) -> Vec<u8> {
    let messages = batch
        .iter()
        .map(|((ns, name), p)| WireStatMessage {
            namespace: ns.to_string(),
            name: name.to_string(),
            stat: Some(Stat {
                pod_name: pod_name.to_string(),
                average_concurrent_requests: p.concurrency,
                average_proxied_concurrent_requests: 0.0,
                request_count: p.requests,
                proxied_request_count: 0.0,
                process_uptime: p.uptime,
                // 0: the autoscaler stamps the stat on receipt (no clock skew between pods).
                timestamp: 0,
            }),
        })
        .collect();
    WireStatMessages { messages }.encode_to_vec()
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// Writes everything waiting; on failure the batch goes back to the outbox.
fn flush_outbox(
    ws: &mut WebSocket<TcpStream>,
    config: &ClientConfig,
    outbox: &Outbox,
    counters: &Counters,
) -> bool {
    let batch = outbox.take();
    if batch.is_empty() {
        return true;
    }
    let frame = encode(&batch, &config.pod_name);
    match ws.send(Message::Binary(frame.into())) {
        Ok(()) => {
            stats::inc(&counters.frames_sent);
            stats::add(&counters.stats_sent, batch.len() as u64);
            stats::add(
                &counters.pokes_sent,
                batch.iter().filter(|(_, p)| p.poke).count() as u64,
            );
            true
        }
        Err(_) => {
            outbox.put_back(batch);
            false
        }
    }
}

fn session(
    ws: &mut WebSocket<TcpStream>,
    config: &ClientConfig,
    outbox: &Outbox,
    wake: &Receiver<()>,
    counters: &Counters,
) -> SessionEnd {
    loop {
        if !flush_outbox(ws, config, outbox, counters) {
            return SessionEnd::Dropped;
        }
        // Anything from the server? Only a close (or an error) matters.
        loop {
            match ws.read() {
                Ok(Message::Close(_)) => {
                    stats::inc(&counters.closed_by_server);
                    // Answer the close handshake (best effort) and reconnect.
                    let _ = ws.flush();
                    return SessionEnd::Dropped;
                }
                Ok(_) => continue,
                Err(e) if is_timeout(&e) => break,
                Err(_) => return SessionEnd::Dropped,
            }
        }
        match wake.recv_timeout(POLL) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = flush_outbox(ws, config, outbox, counters);
                return SessionEnd::Shutdown;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_max_concurrency_and_sums_counts() {
        let counters = Arc::new(Counters::default());
        let o = Outbox::new(2, counters.clone());
        let (ns, a, b, c): (Arc<str>, Arc<str>, Arc<str>, Arc<str>) =
            ("ns".into(), "a".into(), "b".into(), "c".into());
        o.push(
            &ns,
            &a,
            Pending {
                concurrency: 1.0,
                requests: 1.0,
                uptime: 1.0,
                poke: true,
            },
        );
        o.push(
            &ns,
            &a,
            Pending {
                concurrency: 0.5,
                requests: 3.0,
                uptime: 2.0,
                poke: false,
            },
        );
        o.push(&ns, &b, Pending::default());
        o.push(&ns, &c, Pending::default());
        assert_eq!(o.len(), 2);
        assert_eq!(counters.snapshot().outbox_dropped, 1);
        let mut got = o.take();
        got.sort_by(|x, y| x.0.1.cmp(&y.0.1));
        assert_eq!(
            got[0].1,
            Pending {
                concurrency: 1.0,
                requests: 4.0,
                uptime: 2.0,
                poke: true
            }
        );
        let bytes = encode(&got, "pod");
        let decoded = WireStatMessages::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.messages.len(), 2);
        assert_eq!(decoded.messages[0].stat.as_ref().unwrap().pod_name, "pod");
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let f = j.factor();
            assert!((0.5..1.0).contains(&f), "{f}");
        }
    }
}
