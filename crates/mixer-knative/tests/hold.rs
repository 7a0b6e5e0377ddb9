//! Holding the first requests to an idle revision, on virtual time (`VirtualPlatform`, no
//! websocket: the background executor drops its task): released together when the readiness
//! URL answers 200 or the host calls `mark_ready`, UNAVAILABLE (or allowed) after the timeout,
//! cancelled checks never called back and never leaked, the hold queue bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{NoBackground, by_headers, config_yaml, pipeline};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{CalloutError, Dispatcher, HttpResponse};
use mixer_core::{CheckHandle, CheckStart, Code, Pipeline};
use mixer_knative::{KnativeAdapter, KnativeHandler};
use parking_lot::Mutex;
use serde_json::{Value, json};

type Answers = Arc<Mutex<Vec<(Code, String)>>>;

struct Setup {
    vt: VirtualPlatform,
    p: Pipeline,
    handler: Arc<KnativeHandler>,
    adapter: Arc<KnativeAdapter>,
    answers: Answers,
}

fn setup(hold: Value) -> Setup {
    let vt = VirtualPlatform::new();
    let mut platform = vt.platform();
    platform.background = Arc::new(NoBackground);
    let params = json!({
        "autoscalerUrl": "ws://127.0.0.1:9/", "podName": "p", "reportInterval": "1s", "idleAfter": "30s",
        "hold": hold,
    });
    let (p, handler, adapter) = pipeline(&config_yaml(&params, "20s"), platform);
    Setup {
        vt,
        p,
        handler,
        adapter,
        answers: Arc::default(),
    }
}

impl Setup {
    fn dispatcher(&self) -> Arc<dyn Dispatcher> {
        Arc::new(self.vt.clone())
    }
    /// Starts a check for `revision`; `Some(handle)` when held.
    fn check(&self, revision: &str) -> Option<CheckHandle> {
        let answers = self.answers.clone();
        let started =
            self.p
                .worker(self.dispatcher())
                .check(&by_headers("default", revision), move |a| {
                    answers
                        .lock()
                        .push((a.status.code, a.status.message.clone()))
                });
        match started {
            CheckStart::Done(a) => {
                self.answers
                    .lock()
                    .push((a.status.code, a.status.message.clone()));
                None
            }
            CheckStart::Pending(h) => Some(h),
        }
    }
    fn answers(&self) -> Vec<(Code, String)> {
        self.answers.lock().clone()
    }
}

fn http(status: u16) -> Result<HttpResponse, CalloutError> {
    Ok(HttpResponse {
        status,
        headers: vec![],
        body: Bytes::new(),
    })
}

#[test]
fn held_until_the_readiness_url_answers_200_then_released_together() {
    let s = setup(json!({
        "enabled": true, "timeout": "10s", "probeInterval": "200ms",
        "readinessUrl": "http://127.0.0.1:8012/ready/{namespace}/{revision}",
    }));
    let handles: Vec<_> = (0..3)
        .map(|_| s.check("hello-00001").expect("held"))
        .collect();
    s.vt.run_posted();
    assert!(s.answers().is_empty());
    let probes = s.vt.http_requests();
    assert_eq!(probes.len(), 1, "one probe per revision, not per request");
    assert_eq!(probes[0].1.authority, "127.0.0.1:8012");
    assert_eq!(probes[0].1.path, "/ready/default/hello-00001");
    // Not ready yet: probed again after probeInterval.
    s.vt.advance(Duration::from_millis(100));
    assert!(s.vt.respond_http(probes[0].0, http(503)));
    assert!(s.vt.http_requests().is_empty());
    s.vt.advance(Duration::from_millis(200));
    let probes = s.vt.http_requests();
    assert_eq!(probes.len(), 1);
    s.vt.advance(Duration::from_millis(700)); // t = 1 s
    assert!(s.vt.respond_http(probes[0].0, http(200)));
    s.vt.run_posted();
    assert_eq!(
        s.answers(),
        vec![(Code::OK, String::new()); 3],
        "released together"
    );
    let st = s.handler.stats();
    assert_eq!(
        (
            st.requests_held,
            st.requests_released,
            st.held_now,
            st.probes
        ),
        (3, 3, 0, 2)
    );
    assert_eq!(st.hold_time.count(), 3);
    assert_eq!(st.hold_time.max, Duration::from_secs(1));
    assert_eq!(st.hold_time.sum, Duration::from_secs(3));
    // Ready: later requests pass at once.
    assert!(s.check("hello-00001").is_none());
    assert_eq!(s.answers().len(), 4);
    assert_eq!(st.pokes, 1);
    drop(handles);
}

#[test]
fn released_by_mark_ready_from_the_host() {
    let s = setup(json!({"enabled": true, "timeout": "10s"}));
    let a = s.check("hello-00001").expect("held");
    let b = s.check("hello-00001").expect("held");
    let other = s.check("other-00001").expect("held");
    s.vt.advance(Duration::from_secs(2));
    assert!(
        s.vt.http_requests().is_empty(),
        "no readiness URL: no probes"
    );
    assert_eq!(s.adapter.mark_ready("default", "hello-00001"), 2);
    s.vt.run_posted();
    assert_eq!(s.answers(), vec![(Code::OK, String::new()); 2]);
    assert_eq!(s.handler.held(), 1, "the other revision stays held");
    assert_eq!(s.handler.stats().hold_time.sum, Duration::from_secs(4));
    assert_eq!(s.adapter.mark_ready("default", "nope"), 0);
    drop((a, b, other));
}

#[test]
fn fails_with_unavailable_after_the_timeout() {
    let s = setup(
        json!({"enabled": true, "timeout": "4s", "readinessUrl": "http://127.0.0.1:8012/ready"}),
    );
    let first = s.check("cold-00001").expect("held");
    s.vt.advance(Duration::from_secs(1));
    let second = s.check("cold-00001").expect("held");
    s.vt.advance(Duration::from_secs(3)); // t = 4 s: the first times out
    let answers = s.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, Code::UNAVAILABLE);
    assert!(
        answers[0]
            .1
            .contains("knative revision default/cold-00001 did not become ready within 4s"),
        "{}",
        answers[0].1
    );
    s.vt.advance(Duration::from_secs(1)); // t = 5 s: the second
    assert_eq!(s.answers().len(), 2);
    let st = s.handler.stats();
    assert_eq!(
        (st.requests_timed_out, st.requests_released, st.held_now),
        (2, 0, 0)
    );
    assert_eq!(st.hold_time.count(), 0);
    // Probes stop once nothing is held.
    let n = st.probes;
    for (id, _) in s.vt.http_requests() {
        s.vt.respond_http(id, http(503));
    }
    s.vt.advance(Duration::from_secs(5));
    assert!(s.vt.http_requests().is_empty());
    assert!(s.handler.stats().probes <= n + 1);
    drop((first, second));
}

#[test]
fn allows_after_the_timeout_when_configured() {
    let s = setup(json!({"enabled": true, "timeout": "2s", "onTimeout": "ALLOW"}));
    let h = s.check("cold-00001").expect("held");
    s.vt.advance(Duration::from_secs(2));
    assert_eq!(s.answers(), [(Code::OK, String::new())]);
    drop(h);
}

#[test]
fn a_cancelled_held_check_is_never_called_back_nor_leaked() {
    let s = setup(json!({"enabled": true, "timeout": "10s"}));
    // Stream goes away before the revision is ready.
    let gone = s.check("hello-00001").expect("held");
    let stays = s.check("hello-00001").expect("held");
    drop(gone);
    assert_eq!(s.adapter.mark_ready("default", "hello-00001"), 2);
    s.vt.run_posted();
    assert_eq!(s.answers().len(), 1, "only the live stream is answered");
    assert_eq!(s.handler.held(), 0);
    drop(stays);

    // Stream goes away and the revision never becomes ready: removed at the timeout.
    let gone = s.check("never-00001").expect("held");
    drop(gone);
    assert_eq!(s.handler.held(), 1);
    s.vt.advance(Duration::from_secs(10));
    assert_eq!(s.handler.held(), 0);
    assert_eq!(s.answers().len(), 1);
    assert_eq!(s.handler.stats().requests_timed_out, 1);
}

#[test]
fn the_hold_queue_is_bounded() {
    let s = setup(json!({"enabled": true, "timeout": "10s", "maxHeld": 2}));
    let a = s.check("hello-00001").expect("held");
    let b = s.check("hello-00001").expect("held");
    assert!(
        s.check("hello-00001").is_none(),
        "third is answered at once"
    );
    let answers = s.answers();
    assert_eq!(answers[0].0, Code::UNAVAILABLE);
    assert!(
        answers[0].1.contains("2 requests are held already"),
        "{}",
        answers[0].1
    );
    assert_eq!(s.handler.stats().requests_rejected, 1);
    drop((a, b));
}

#[test]
fn an_idle_revision_is_held_again_after_it_went_idle() {
    let s = setup(json!({"enabled": true, "timeout": "10s"}));
    let h = s.check("hello-00001").expect("held");
    s.adapter.mark_ready("default", "hello-00001");
    s.vt.run_posted();
    let bag = by_headers("default", "hello-00001");
    s.p.worker(s.dispatcher()).report(&bag);
    assert!(s.check("hello-00001").is_none(), "warm");
    s.p.worker(s.dispatcher()).report(&bag);
    // idleAfter 30 s without requests: forgotten, the next request pokes and holds again.
    s.vt.advance(Duration::from_secs(31));
    assert_eq!(s.handler.stats().revisions, 0);
    let again = s.check("hello-00001").expect("held again");
    let st = s.handler.stats();
    assert_eq!((st.pokes, st.requests_held), (2, 2));
    drop((h, again));
}

#[test]
fn requests_naming_no_revision_pass_untouched() {
    let s = setup(json!({"enabled": true, "timeout": "10s"}));
    let w = s.p.worker(s.dispatcher());
    for bag in [
        mixer_attr::Attributes::new(),
        common::by_host("example.com"),
        common::by_host("a.b.c.svc"),
        by_headers("", "rev"),
    ] {
        match w.check(&bag, |_| {}) {
            CheckStart::Done(a) => assert_eq!(a.status.code, Code::OK),
            CheckStart::Pending(_) => panic!("not a Knative request"),
        }
    }
    let st = s.handler.stats();
    assert_eq!((st.pokes, st.revisions), (0, 0));
}
