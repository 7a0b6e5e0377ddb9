//! A deterministic, single-threaded platform on virtual time, for tests.
//!
//! Time moves only when the test says so ([`VirtualPlatform::advance`]); timers fire in deadline
//! order; callouts wait until the test answers them, in whatever order it chooses
//! ([`VirtualPlatform::respond_http`]), or until their timeout passes in virtual time. Every
//! completion runs through the post queue, as it would on an Envoy worker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use mixer_attr::Timestamp;
use parking_lot::Mutex;

use super::{
    CalloutError, CalloutHandle, Cancel, Clock, Dispatcher, GrpcCallback, GrpcRequest,
    HttpCallback, HttpRequest, HttpResponse, MonoTime, Task, TimerId,
};

/// Identifies a pending callout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CalloutId(pub u64);

enum Pending {
    Http(HttpRequest, HttpCallback, TimerId),
    Grpc(GrpcRequest, GrpcCallback, TimerId),
}

#[derive(Default)]
struct State {
    now: u64,
    wall_origin_nanos: i128,
    next_id: u64,
    /// (deadline, id) -> task
    timers: BTreeMap<(u64, u64), Task>,
    posted: VecDeque<Task>,
    callouts: BTreeMap<u64, Pending>,
    tasks_run: u64,
}

/// The virtual-time platform. Clones share one event loop.
#[derive(Clone, Default)]
pub struct VirtualPlatform {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for VirtualPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("VirtualPlatform")
            .field("now_ns", &s.now)
            .field("timers", &s.timers.len())
            .field("posted", &s.posted.len())
            .field("callouts", &s.callouts.len())
            .finish()
    }
}

impl VirtualPlatform {
    /// A platform at monotonic time 0 and wall time 2020-01-01T00:00:00Z.
    pub fn new() -> Self {
        let p = VirtualPlatform::default();
        p.state.lock().wall_origin_nanos = 1_577_836_800 * 1_000_000_000;
        p
    }

    /// A [`Platform`](super::Platform) whose clock and main dispatcher are this loop.
    pub fn platform(&self) -> super::Platform {
        super::Platform::on(Arc::new(self.clone()), Arc::new(self.clone()))
    }

    /// Current virtual monotonic time.
    pub fn now(&self) -> MonoTime {
        MonoTime(self.state.lock().now)
    }

    /// Runs posted tasks until none is left (tasks may post more). Returns how many ran.
    pub fn run_posted(&self) -> usize {
        let mut n = 0;
        loop {
            let task = self.state.lock().posted.pop_front();
            match task {
                Some(t) => {
                    t();
                    n += 1;
                    self.state.lock().tasks_run += 1;
                }
                None => return n,
            }
        }
    }

    /// Moves time forward by `d`, firing every timer due on the way in deadline order (time
    /// stands at each timer's deadline while it runs) and running posted tasks after each.
    pub fn advance(&self, d: std::time::Duration) {
        let target = self.now().plus(d).0;
        self.run_posted();
        loop {
            let next = {
                let mut s = self.state.lock();
                match s.timers.keys().next().copied() {
                    Some(key) if key.0 <= target => {
                        s.now = s.now.max(key.0);
                        s.timers.remove(&key)
                    }
                    _ => {
                        s.now = s.now.max(target);
                        None
                    }
                }
            };
            match next {
                Some(task) => {
                    task();
                    self.state.lock().tasks_run += 1;
                    self.run_posted();
                }
                None => return,
            }
        }
    }

    /// Number of timers not yet fired.
    pub fn pending_timers(&self) -> usize {
        self.state.lock().timers.len()
    }

    /// The outstanding HTTP callouts, oldest first.
    pub fn http_requests(&self) -> Vec<(CalloutId, HttpRequest)> {
        let s = self.state.lock();
        s.callouts
            .iter()
            .filter_map(|(id, p)| match p {
                Pending::Http(r, _, _) => Some((CalloutId(*id), r.clone())),
                Pending::Grpc(..) => None,
            })
            .collect()
    }

    /// The outstanding gRPC callouts, oldest first.
    pub fn grpc_requests(&self) -> Vec<(CalloutId, GrpcRequest)> {
        let s = self.state.lock();
        s.callouts
            .iter()
            .filter_map(|(id, p)| match p {
                Pending::Grpc(r, _, _) => Some((CalloutId(*id), r.clone())),
                Pending::Http(..) => None,
            })
            .collect()
    }

    /// Answers an HTTP callout; its callback runs now, through the post queue. Returns false if
    /// the callout is unknown (answered, cancelled or timed out already).
    pub fn respond_http(&self, id: CalloutId, result: Result<HttpResponse, CalloutError>) -> bool {
        self.answer(id, true, |p| match p {
            Pending::Http(_, cb, timer) => Some((Box::new(move || cb(result)) as Task, timer)),
            Pending::Grpc(..) => None,
        })
    }

    /// Answers a gRPC callout, as [`VirtualPlatform::respond_http`].
    pub fn respond_grpc(&self, id: CalloutId, result: Result<Bytes, CalloutError>) -> bool {
        self.answer(id, false, |p| match p {
            Pending::Grpc(_, cb, timer) => Some((Box::new(move || cb(result)) as Task, timer)),
            Pending::Http(..) => None,
        })
    }

    /// Takes out callout `id` if it is of the wanted kind, turns it into its completion, cancels
    /// its timeout and runs the completion through the post queue.
    fn answer(
        &self,
        id: CalloutId,
        http: bool,
        complete: impl FnOnce(Pending) -> Option<(Task, TimerId)>,
    ) -> bool {
        let pending = {
            let mut s = self.state.lock();
            let wanted = matches!(
                (s.callouts.get(&id.0), http),
                (Some(Pending::Http(..)), true) | (Some(Pending::Grpc(..)), false)
            );
            if wanted {
                s.callouts.remove(&id.0)
            } else {
                None
            }
        };
        let Some((task, timer)) = pending.and_then(complete) else {
            return false;
        };
        self.cancel_timer(timer);
        self.post(task);
        self.run_posted();
        true
    }

    fn next_id(s: &mut State) -> u64 {
        s.next_id += 1;
        s.next_id
    }

    fn schedule_locked(s: &mut State, delay: std::time::Duration, task: Task) -> TimerId {
        let id = Self::next_id(s);
        let deadline = MonoTime(s.now).plus(delay).0;
        s.timers.insert((deadline, id), task);
        TimerId(id)
    }

    /// Fails the callout `id` with `Timeout` if it is still outstanding.
    fn time_out(&self, id: u64) {
        let pending = self.state.lock().callouts.remove(&id);
        match pending {
            Some(Pending::Http(_, cb, _)) => cb(Err(CalloutError::Timeout)),
            Some(Pending::Grpc(_, cb, _)) => cb(Err(CalloutError::Timeout)),
            None => {}
        }
    }
}

struct CancelCallout {
    platform: VirtualPlatform,
    id: u64,
}

impl Cancel for CancelCallout {
    fn cancel(&self) {
        let pending = self.platform.state.lock().callouts.remove(&self.id);
        let timer = match pending {
            Some(Pending::Http(_, _, t)) | Some(Pending::Grpc(_, _, t)) => Some(t),
            None => None,
        };
        if let Some(t) = timer {
            self.platform.cancel_timer(t);
        }
    }
}

impl Clock for VirtualPlatform {
    fn monotonic(&self) -> MonoTime {
        self.now()
    }
    fn wall(&self) -> Timestamp {
        let s = self.state.lock();
        Timestamp::from_unix_nanos(s.wall_origin_nanos + i128::from(s.now))
    }
}

impl Dispatcher for VirtualPlatform {
    fn clock(&self) -> &dyn Clock {
        self
    }
    fn schedule(&self, delay: std::time::Duration, task: Task) -> TimerId {
        Self::schedule_locked(&mut self.state.lock(), delay, task)
    }
    fn cancel_timer(&self, id: TimerId) {
        self.state.lock().timers.retain(|(_, tid), _| *tid != id.0);
    }
    fn post(&self, task: Task) {
        self.state.lock().posted.push_back(task);
    }
    fn http(&self, request: HttpRequest, done: HttpCallback) -> CalloutHandle {
        let timeout = request.timeout;
        let mut s = self.state.lock();
        let id = Self::next_id(&mut s);
        let me = self.clone();
        let timer = Self::schedule_locked(&mut s, timeout, Box::new(move || me.time_out(id)));
        s.callouts.insert(id, Pending::Http(request, done, timer));
        CalloutHandle::new(CancelCallout {
            platform: self.clone(),
            id,
        })
    }
    fn grpc(&self, request: GrpcRequest, done: GrpcCallback) -> CalloutHandle {
        let timeout = request.timeout;
        let mut s = self.state.lock();
        let id = Self::next_id(&mut s);
        let me = self.clone();
        let timer = Self::schedule_locked(&mut s, timeout, Box::new(move || me.time_out(id)));
        s.callouts.insert(id, Pending::Grpc(request, done, timer));
        CalloutHandle::new(CancelCallout {
            platform: self.clone(),
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn log() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) -> Task) {
        let l = Arc::new(Mutex::new(Vec::new()));
        let l2 = l.clone();
        (l, move |s: &str| {
            let l = l2.clone();
            let s = s.to_string();
            Box::new(move || l.lock().push(s)) as Task
        })
    }

    fn req(timeout_ms: u64) -> HttpRequest {
        HttpRequest {
            authority: "backend".into(),
            method: "GET".into(),
            path: "/".into(),
            headers: vec![],
            body: Bytes::new(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn timers_fire_in_deadline_order_at_their_time() {
        let p = VirtualPlatform::new();
        let (l, push) = log();
        p.schedule(Duration::from_millis(30), push("c"));
        p.schedule(Duration::from_millis(10), push("a"));
        let cancelled = p.schedule(Duration::from_millis(20), push("x"));
        let p2 = p.clone();
        let l2 = l.clone();
        p.schedule(
            Duration::from_millis(15),
            Box::new(move || l2.lock().push(format!("b@{}", p2.now().0 / 1_000_000))),
        );
        p.cancel_timer(cancelled);
        p.advance(Duration::from_millis(25));
        assert_eq!(*l.lock(), ["a", "b@15"]);
        assert_eq!(p.now(), MonoTime(25_000_000));
        p.advance(Duration::from_millis(5));
        assert_eq!(*l.lock(), ["a", "b@15", "c"]);
        assert_eq!(p.pending_timers(), 0);
    }

    #[test]
    fn callouts_answer_in_chosen_order_and_time_out() {
        let p = VirtualPlatform::new();
        let (l, _) = log();
        let mk = |name: &'static str| {
            let l = l.clone();
            Box::new(move |r: Result<HttpResponse, CalloutError>| {
                l.lock().push(format!(
                    "{name}:{}",
                    r.map(|r| r.status.to_string())
                        .unwrap_or_else(|e| e.to_string())
                ))
            }) as HttpCallback
        };
        let _a = p.http(req(100), mk("a"));
        let _b = p.http(req(100), mk("b"));
        let c = p.http(req(100), mk("c"));
        let ids: Vec<_> = p.http_requests().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 3);
        let ok = |s| {
            Ok(HttpResponse {
                status: s,
                headers: vec![],
                body: Bytes::new(),
            })
        };
        assert!(p.respond_http(ids[1], ok(200)));
        c.cancel();
        assert!(
            !p.respond_http(ids[2], ok(500)),
            "cancelled callouts cannot be answered"
        );
        p.advance(Duration::from_millis(100));
        assert_eq!(*l.lock(), ["b:200", "a:callout timed out"]);
        assert!(!p.respond_http(ids[0], ok(200)), "timed out already");
    }

    #[test]
    fn clocks_follow_virtual_time() {
        let p = VirtualPlatform::new();
        let w0 = p.wall();
        p.advance(Duration::from_secs(2));
        assert_eq!(
            p.wall().duration_since(w0),
            Some(mixer_attr::Duration::from_secs(2))
        );
        assert_eq!(p.monotonic(), MonoTime(2_000_000_000));
    }

    #[test]
    fn posts_from_other_threads_run_on_the_loop() {
        let p = VirtualPlatform::new();
        let (l, push) = log();
        let p2 = p.clone();
        let t = push("from-thread");
        std::thread::spawn(move || p2.post(t)).join().unwrap();
        assert!(l.lock().is_empty());
        assert_eq!(p.run_posted(), 1);
        assert_eq!(*l.lock(), ["from-thread"]);
    }
}
