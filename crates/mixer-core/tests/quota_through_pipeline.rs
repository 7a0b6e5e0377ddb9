//! Quota checks through the pipeline against a remote (asynchronous) quota backend, with and
//! without the token prefetch cache: how many backend calls 10,000 checks make, and that the
//! prefetching pipeline answers every check inline while staying close to the limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use bytes::Bytes;
use mixer_attr::{Attributes, Value, well_known as wk};
use mixer_core::adapter::{
    Adapter, AdapterError, Handler, HandlerConfig, QuotaArgs, QuotaHandler, QuotaResult,
    RequestContext,
};
use mixer_core::instance::InstanceView;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{HttpRequest, HttpResponse};
use mixer_core::pending::{Poll, pending};
use mixer_core::snapshot::json_to_struct;
use mixer_core::{
    AdapterRegistry, CompileOptions, Config, Pipeline, QuotaRequest, Status, compile,
};
use mixer_proto::v2;
use parking_lot::Mutex;
use serde_json::json;

/// Asks a quota server over HTTP: the body is the amount, the answer's body the granted amount.
struct Remote {
    prefetch: bool,
    calls: Arc<AtomicU64>,
}
struct RemoteHandler {
    prefetch: bool,
    calls: Arc<AtomicU64>,
}

impl Adapter for Remote {
    fn name(&self) -> &'static str {
        "remotequota"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["quota"]
    }
    fn build(&self, _: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(Arc::new(RemoteHandler {
            prefetch: self.prefetch,
            calls: self.calls.clone(),
        }))
    }
}

impl Handler for RemoteHandler {
    fn as_quota(&self) -> Option<&dyn QuotaHandler> {
        Some(self)
    }
}

impl QuotaHandler for RemoteHandler {
    fn allocate(
        &self,
        _: &InstanceView<'_>,
        args: &QuotaArgs,
        ctx: &RequestContext<'_>,
    ) -> Poll<QuotaResult> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let (done, result) = pending();
        let req = HttpRequest {
            authority: "quota-server".into(),
            method: "POST".into(),
            path: "/allocate".into(),
            headers: vec![],
            body: Bytes::from(args.amount.to_string()),
            timeout: StdDuration::from_secs(5),
        };
        let _ = ctx.dispatcher.http(
            req,
            Box::new(move |r| {
                let granted = r
                    .ok()
                    .and_then(|r| std::str::from_utf8(&r.body).ok()?.parse().ok())
                    .unwrap_or(0);
                done.complete(QuotaResult {
                    status: Status::ok(),
                    granted,
                    valid_duration: mixer_attr::Duration::from_secs(1),
                });
            }),
        );
        Poll::Pending(result)
    }
    fn prefetch(&self) -> bool {
        self.prefetch
    }
}

fn config() -> Config {
    Config {
        handlers: vec![v2::Handler {
            name: "q".into(),
            namespace: "istio-system".into(),
            adapter: "remotequota".into(),
            ..Default::default()
        }],
        instances: vec![v2::Instance {
            name: "requestcount".into(),
            namespace: "istio-system".into(),
            template: "quota".into(),
            params: Some(json_to_struct(
                &json!({"dimensions": {"svc": "destination.service.name"}}),
            )),
            ..Default::default()
        }],
        rules: vec![v2::Rule {
            name: "q".into(),
            namespace: "istio-system".into(),
            actions: vec![v2::Action {
                handler: "q".into(),
                instances: vec!["requestcount".into()],
                name: String::new(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A fixed-window server (1 s windows, `limit` per window) answering after `delay`.
struct Server {
    limit: i64,
    window_start: u64,
    used: i64,
}

impl Server {
    fn grant(&mut self, now_ns: u64, amount: i64) -> i64 {
        if now_ns >= self.window_start + 1_000_000_000 {
            self.window_start = now_ns - now_ns % 1_000_000_000;
            self.used = 0;
        }
        let g = amount.min(self.limit - self.used).max(0);
        self.used += g;
        g
    }
}

/// 10,000 checks at 1,000 per second against a 500-per-second quota; the server answers after
/// 20 ms. Returns (backend calls, checks granted, checks answered inline).
fn run(prefetch: bool) -> (u64, u64, u64) {
    let vt = VirtualPlatform::new();
    let calls = Arc::new(AtomicU64::new(0));
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(Remote {
        prefetch,
        calls: calls.clone(),
    }));
    let snap = compile(
        &config(),
        &registry,
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    let pipeline = Pipeline::new(snap, vt.platform());
    let worker = pipeline.worker(Arc::new(vt.clone()));
    let server = Mutex::new(Server {
        limit: 500,
        window_start: 0,
        used: 0,
    });
    let bag = Attributes::new().with(wk::DESTINATION_SERVICE_NAME, Value::str("reviews"));
    let granted = Arc::new(AtomicU64::new(0));
    let mut inline = 0;
    let mut waiting: Vec<(u64, mixer_core::pal::virtual_time::CalloutId, i64)> = Vec::new();
    for _ in 0..10_000 {
        let req = QuotaRequest {
            name: "requestcount".into(),
            args: QuotaArgs {
                amount: 1,
                ..Default::default()
            },
        };
        let g = granted.clone();
        let done = move |r: Vec<(String, QuotaResult)>| {
            if r.iter().all(|(_, q)| q.granted >= 1) {
                g.fetch_add(1, Ordering::Relaxed);
            }
        };
        if let Some(r) = worker.quota(&bag, &[req], done) {
            inline += 1;
            if r.iter().all(|(_, q)| q.granted >= 1) {
                granted.fetch_add(1, Ordering::Relaxed);
            }
        }
        // The server sees new requests now and answers 20 ms later.
        let now = vt.now().0;
        for (id, r) in vt.http_requests() {
            if !waiting.iter().any(|(_, w, _)| *w == id) {
                let amount: i64 = std::str::from_utf8(&r.body).unwrap().parse().unwrap();
                let g = server.lock().grant(now, amount);
                waiting.push((now + 20_000_000, id, g));
            }
        }
        vt.advance(StdDuration::from_millis(1));
        let now = vt.now().0;
        waiting.retain(|(at, id, g)| {
            if *at <= now {
                vt.respond_http(
                    *id,
                    Ok(HttpResponse {
                        status: 200,
                        headers: vec![],
                        body: Bytes::from(g.to_string()),
                    }),
                );
                false
            } else {
                true
            }
        });
    }
    vt.advance(StdDuration::from_secs(1));
    for (_, id, g) in waiting {
        vt.respond_http(
            id,
            Ok(HttpResponse {
                status: 200,
                headers: vec![],
                body: Bytes::from(g.to_string()),
            }),
        );
    }
    (
        calls.load(Ordering::Relaxed),
        granted.load(Ordering::Relaxed),
        inline,
    )
}

#[test]
fn prefetch_cuts_backend_calls_and_answers_inline() {
    let (calls_plain, granted_plain, inline_plain) = run(false);
    let (calls_prefetch, granted_prefetch, inline_prefetch) = run(true);
    eprintln!("10,000 quota checks at 1,000/s against 500/s:");
    eprintln!(
        "  without prefetch: {calls_plain} backend calls, {granted_plain} granted, {inline_plain} answered inline"
    );
    eprintln!(
        "  with prefetch:    {calls_prefetch} backend calls, {granted_prefetch} granted, {inline_prefetch} answered inline"
    );
    assert_eq!(calls_plain, 10_000);
    assert_eq!(inline_plain, 0);
    assert_eq!(granted_plain, 5_000);
    assert_eq!(
        inline_prefetch, 10_000,
        "every check answered from the token cache"
    );
    assert!(
        calls_prefetch * 20 < calls_plain,
        "prefetch made {calls_prefetch} calls"
    );
    let margin = (granted_prefetch as f64 - 5_000.0).abs() / 5_000.0;
    assert!(
        margin < 0.05,
        "granted {granted_prefetch} of a 5,000 limit (margin {margin:.3})"
    );
}
