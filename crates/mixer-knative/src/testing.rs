//! A stand-in Knative autoscaler for tests and the local demo: a websocket server on loopback
//! that decodes every binary frame as `WireStatMessages` and records it.
//!
//! Not for production: it accepts any client and keeps every frame in memory.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message as _;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::proto::{WireStatMessage, WireStatMessages};

/// One decoded frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub received: Instant,
    /// Which accepted connection it came on (1, 2, ...).
    pub connection: u64,
    pub messages: WireStatMessages,
}

type OnStat = Arc<dyn Fn(&WireStatMessage) + Send + Sync>;

struct Shared {
    frames: Mutex<Vec<Frame>>,
    stop: AtomicBool,
    /// Bumped to close every open connection with 1012 (service restart).
    close_generation: AtomicU64,
    connections: AtomicU64,
    decode_errors: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
    on_stat: Mutex<Option<OnStat>>,
}

/// A running stand-in autoscaler. Stops (and joins its threads) on [`StubAutoscaler::stop`] or
/// drop.
pub struct StubAutoscaler {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StubAutoscaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubAutoscaler")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl StubAutoscaler {
    /// Starts on a free loopback port.
    pub fn start() -> std::io::Result<StubAutoscaler> {
        StubAutoscaler::start_on(0)
    }

    /// Starts on `127.0.0.1:port` (0: a free port).
    pub fn start_on(port: u16) -> std::io::Result<StubAutoscaler> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            frames: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            close_generation: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
            on_stat: Mutex::new(None),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("stub-autoscaler".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(StubAutoscaler {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// Calls `f` for every stat received (on the connection's thread).
    pub fn on_stat(&self, f: impl Fn(&WireStatMessage) + Send + Sync + 'static) {
        *self.shared.on_stat.lock() = Some(Arc::new(f));
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Every frame received so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.shared.frames.lock().clone()
    }

    /// Every stat received so far, with its frame's receive time.
    pub fn stats(&self) -> Vec<(Instant, WireStatMessage)> {
        self.shared
            .frames
            .lock()
            .iter()
            .flat_map(|f| {
                f.messages
                    .messages
                    .iter()
                    .map(move |m| (f.received, m.clone()))
            })
            .collect()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Frames that were not valid `WireStatMessages`.
    pub fn decode_errors(&self) -> u64 {
        self.shared.decode_errors.load(Ordering::SeqCst)
    }

    /// Closes every open connection with code 1012 (service restart), as the autoscaler does
    /// when it restarts; the listener stays up.
    pub fn close_all_with_restart(&self) {
        self.shared.close_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Polls `cond` until it holds or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, cond: impl Fn(&StubAutoscaler) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops listening, drops every connection (without a close frame: a crash) and joins the
    /// threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let threads = std::mem::take(&mut *self.shared.threads.lock());
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for StubAutoscaler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let s = shared.clone();
                if let Ok(t) = std::thread::Builder::new()
                    .name("stub-autoscaler-conn".into())
                    .spawn(move || connection(stream, id, s))
                {
                    shared.threads.lock().push(t);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn connection(stream: TcpStream, id: u64, shared: Arc<Shared>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    let _ = ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(5)));
    let generation = shared.close_generation.load(Ordering::SeqCst);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.close_generation.load(Ordering::SeqCst) != generation {
            let frame = CloseFrame {
                code: CloseCode::Restart,
                reason: "autoscaler restarting".into(),
            };
            let _ = ws.close(Some(frame));
            let _ = ws.flush();
            // Let the client see the frame before the socket goes away.
            std::thread::sleep(Duration::from_millis(20));
            return;
        }
        match ws.read() {
            Ok(Message::Binary(bytes)) => match WireStatMessages::decode(bytes.as_ref()) {
                Ok(messages) => {
                    let on_stat = shared.on_stat.lock().clone();
                    if let Some(f) = on_stat {
                        messages.messages.iter().for_each(|m| f(m));
                    }
                    shared.frames.lock().push(Frame {
                        received: Instant::now(),
                        connection: id,
                        messages,
                    });
                }
                Err(_) => {
                    shared.decode_errors.fetch_add(1, Ordering::SeqCst);
                }
            },
            Ok(Message::Close(_)) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
