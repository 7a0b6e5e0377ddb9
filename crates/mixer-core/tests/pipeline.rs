//! The pipeline end to end on virtual time, with test adapters: an asynchronous check backend
//! reached through the PAL's HTTP callout, and a counting report backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use mixer_attr::{Attributes, Value, Vocabulary, well_known as wk};
use mixer_core::adapter::{
    Adapter, AdapterError, CheckHandler, CheckResult, Handler, HandlerConfig, QuotaArgs,
    QuotaHandler, QuotaResult, ReportHandler, RequestContext,
};
use mixer_core::config_builder::{self, instance, rule};
use mixer_core::instance::InstanceView;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pal::{HttpRequest, HttpResponse};
use mixer_core::pending::{Poll, pending};
use mixer_core::{
    AdapterRegistry, CheckAnswer, CheckStart, Code, CompileOptions, Config, Pipeline, Status,
    compile,
};
use mixer_proto::v2;
use parking_lot::Mutex;
use serde_json::json;

/// Asks `authz-backend` over HTTP: 200 allows, anything else denies with PERMISSION_DENIED.
/// With `params.abandon: true` it drops the request instead (a dead backend).
struct HttpAuthz;
struct HttpAuthzHandler {
    abandon: bool,
    /// Never answer: keep the completers.
    hang: bool,
    held: Mutex<Vec<mixer_core::pending::Completer<CheckResult>>>,
}

impl Adapter for HttpAuthz {
    fn name(&self) -> &'static str {
        "httpauthz"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["authorization", "checknothing"]
    }
    fn build(&self, c: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(Arc::new(HttpAuthzHandler {
            abandon: c.params["abandon"].as_bool().unwrap_or(false),
            hang: c.params["hang"].as_bool().unwrap_or(false),
            held: Mutex::new(Vec::new()),
        }))
    }
}

impl Handler for HttpAuthzHandler {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        Some(self)
    }
}

impl CheckHandler for HttpAuthzHandler {
    fn check(&self, view: &InstanceView<'_>, ctx: &RequestContext<'_>) -> Poll<CheckResult> {
        let (completer, result) = pending();
        if self.abandon {
            drop(completer);
            return Poll::Pending(result);
        }
        if self.hang {
            self.held.lock().push(completer);
            return Poll::Pending(result);
        }
        let user = view
            .get("subject.user")
            .map(|v| v.to_string())
            .unwrap_or_default();
        let req = HttpRequest {
            authority: "authz-backend".into(),
            method: "POST".into(),
            path: "/check".into(),
            headers: vec![],
            body: Bytes::from(user),
            timeout: StdDuration::from_millis(500),
        };
        let handle = ctx.dispatcher.http(
            req,
            Box::new(move |r| {
                completer.complete(match r {
                    Ok(HttpResponse { status: 200, .. }) => {
                        CheckResult::allow(mixer_attr::Duration::from_secs(30), 50)
                    }
                    Ok(HttpResponse { status: 503, .. }) => {
                        CheckResult::failure(Status::new(Code::UNAVAILABLE, "backend unavailable"))
                    }
                    _ => CheckResult::deny(
                        Status::new(Code::PERMISSION_DENIED, "backend said no"),
                        mixer_attr::Duration::from_secs(5),
                        5,
                    ),
                });
            }),
        );
        drop(handle);
        Poll::Pending(result)
    }
}

/// Grants up to `params.limit` units in total, in process.
struct FixedQuota;
struct FixedQuotaHandler {
    left: Mutex<i64>,
}

impl Adapter for FixedQuota {
    fn name(&self) -> &'static str {
        "fixedquota"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["quota"]
    }
    fn build(&self, c: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(Arc::new(FixedQuotaHandler {
            left: Mutex::new(c.params["limit"].as_i64().unwrap_or(0)),
        }))
    }
}

impl Handler for FixedQuotaHandler {
    fn as_quota(&self) -> Option<&dyn QuotaHandler> {
        Some(self)
    }
}

impl QuotaHandler for FixedQuotaHandler {
    fn allocate(
        &self,
        _: &InstanceView<'_>,
        args: &QuotaArgs,
        _: &RequestContext<'_>,
    ) -> Poll<QuotaResult> {
        let mut left = self.left.lock();
        let granted = if args.amount <= *left { args.amount } else { 0 };
        *left -= granted;
        Poll::Ready(QuotaResult {
            status: Status::ok(),
            granted,
            valid_duration: mixer_attr::Duration::from_secs(1),
        })
    }
}

/// Counts the metric instances it receives, by instance name and `value`.
#[derive(Default)]
struct Counter {
    seen: Mutex<Vec<(String, i64)>>,
}
struct CounterAdapter(Arc<Counter>);

impl Adapter for CounterAdapter {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["metric"]
    }
    fn build(&self, _: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(self.0.clone())
    }
}

impl Handler for Counter {
    fn as_report(&self) -> Option<&dyn ReportHandler> {
        Some(self)
    }
}

impl ReportHandler for Counter {
    fn report(&self, instances: &[InstanceView<'_>]) {
        for v in instances {
            let n = match v.get("value") {
                Some(Value::Int64(n)) => *n,
                _ => -1,
            };
            self.seen.lock().push((v.name().to_string(), n));
        }
    }
}

fn handler(name: &str, adapter: &str, params: serde_json::Value, fail_open: bool) -> v2::Handler {
    let policy = if fail_open {
        v2::dispatch_controls::FailurePolicy::FailOpen
    } else {
        v2::dispatch_controls::FailurePolicy::FailClose
    };
    v2::Handler {
        dispatch: Some(v2::DispatchControls {
            failure_policy: policy as i32,
            ..Default::default()
        }),
        ..config_builder::handler(name, adapter, params)
    }
}

fn config(authz_params: serde_json::Value, fail_open: bool, metric_value: &str) -> Config {
    Config {
        handlers: vec![
            handler("authz", "httpauthz", authz_params, fail_open),
            handler("count", "counter", json!({}), false),
        ],
        instances: vec![
            instance(
                "who",
                "authorization",
                json!({"subject": {"user": "source.user | \"anonymous\""}}),
            ),
            instance(
                "requests",
                "metric",
                json!({"value": metric_value, "dimensions": {"code": "response.code | 200"}}),
            ),
        ],
        rules: vec![
            rule(
                "authz-reviews",
                "destination.service.name == \"reviews\"",
                "authz",
                &["who"],
            ),
            rule(
                "count-all",
                "",
                "count.istio-system",
                &["requests.instance"],
            ),
        ],
        ..Default::default()
    }
}

struct Setup {
    vt: VirtualPlatform,
    pipeline: Pipeline,
    registry: AdapterRegistry,
    counter: Arc<Counter>,
}

fn setup(cfg: &Config) -> Setup {
    let vt = VirtualPlatform::new();
    let platform = vt.platform();
    let counter = Arc::new(Counter::default());
    let mut registry = AdapterRegistry::new();
    registry
        .register(Arc::new(HttpAuthz))
        .register(Arc::new(CounterAdapter(counter.clone())))
        .register(Arc::new(FixedQuota));
    let snapshot = compile(cfg, &registry, &platform, None, &CompileOptions::default())
        .expect("config compiles");
    Setup {
        vt,
        pipeline: Pipeline::new(snapshot, platform),
        registry,
        counter,
    }
}

fn request(service: &str, user: &str) -> Attributes<'static> {
    Attributes::new()
        .with(
            wk::DESTINATION_SERVICE_NAME,
            Value::String(service.to_string().into()),
        )
        .with(wk::SOURCE_USER, Value::String(user.to_string().into()))
}

type Slot = Arc<Mutex<Option<CheckAnswer>>>;

/// Starts a check that must go to a backend (not answered inline).
fn start_pending(s: &Setup, bag: &Attributes<'_>) -> (mixer_core::CheckHandle, Slot) {
    match start(s, bag) {
        (CheckStart::Pending(h), slot) => (h, slot),
        (CheckStart::Done(a), _) => panic!("expected pending, got {:?}", a.status),
    }
}

fn start(s: &Setup, bag: &Attributes<'_>) -> (CheckStart, Slot) {
    let worker = s.pipeline.worker(Arc::new(s.vt.clone()));
    let slot: Slot = Arc::default();
    let out = slot.clone();
    (worker.check(bag, move |d| *out.lock() = Some(d)), slot)
}

#[test]
fn unmatched_rules_answer_inline() {
    let s = setup(&config(json!({}), false, "1"));
    let (started, slot) = start(&s, &request("ratings", "alice"));
    let CheckStart::Done(d) = started else {
        panic!("expected an inline answer")
    };
    assert!(d.is_allowed());
    assert_eq!(
        d.referenced.to_strings(&Vocabulary::istio()),
        ["destination.service.name"]
    );
    assert!(
        slot.lock().is_none(),
        "inline answers do not call the callback"
    );
}

#[test]
fn async_backend_completes_on_the_worker_later() {
    let s = setup(&config(json!({}), false, "1"));
    let (handle, slot) = start_pending(&s, &request("reviews", "alice"));
    let calls = s.vt.http_requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1.body, Bytes::from("alice"));
    assert!(slot.lock().is_none());
    s.vt.respond_http(
        calls[0].0,
        Ok(HttpResponse {
            status: 403,
            headers: vec![],
            body: Bytes::new(),
        }),
    );
    let d = slot.lock().take().expect("callback ran");
    assert_eq!(d.status.code, Code::PERMISSION_DENIED);
    assert_eq!(
        (d.valid_duration, d.valid_use_count),
        (mixer_attr::Duration::from_secs(5), 5)
    );
    drop(handle);
}

#[test]
fn cancelled_check_never_calls_back() {
    let s = setup(&config(json!({}), false, "1"));
    let (handle, slot) = start_pending(&s, &request("reviews", "bob"));
    drop(handle); // the stream went away (Envoy onDestroy)
    let calls = s.vt.http_requests();
    s.vt.respond_http(
        calls[0].0,
        Ok(HttpResponse {
            status: 200,
            headers: vec![],
            body: Bytes::new(),
        }),
    );
    s.vt.advance(StdDuration::from_secs(1));
    assert!(slot.lock().is_none());
}

#[test]
fn backend_timeout_denies_under_fail_close() {
    let s = setup(&config(json!({}), false, "1"));
    let (_handle, slot) = start_pending(&s, &request("reviews", "carol"));
    s.vt.advance(StdDuration::from_millis(499));
    assert!(slot.lock().is_none());
    s.vt.advance(StdDuration::from_millis(1));
    let d = slot.lock().take().expect("timed out into a decision");
    assert_eq!(
        d.status.code,
        Code::PERMISSION_DENIED,
        "the adapter maps a timeout to a deny"
    );
}

#[test]
fn dead_backend_follows_failure_policy() {
    let closed = setup(&config(json!({"abandon": true}), false, "1"));
    let (started, slot) = start(&closed, &request("reviews", "dave"));
    assert!(matches!(started, CheckStart::Pending(_)) || slot.lock().is_some());
    closed.vt.run_posted();
    let d = slot.lock().take().expect("decided");
    assert_eq!(d.status.code, Code::UNAVAILABLE);
    assert_eq!(
        closed
            .pipeline
            .stats()
            .handler_failures
            .load(Ordering::Relaxed),
        1
    );

    let open = setup(&config(json!({"abandon": true}), true, "1"));
    let (started, slot) = start(&open, &request("reviews", "dave"));
    let _keep = started;
    open.vt.run_posted();
    let d = slot.lock().take().expect("decided");
    assert!(d.is_allowed());
    assert_eq!(d.valid_use_count, 0, "a fail-open allow must not be cached");
}

#[test]
fn report_reaches_the_report_handler() {
    let s = setup(&config(json!({}), false, "1"));
    let worker = s.pipeline.worker(Arc::new(s.vt.clone()));
    let summary = worker.report(&request("reviews", "alice"));
    assert_eq!(summary.instances_sent, 1);
    assert_eq!(
        *s.counter.seen.lock(),
        [("requests.instance.istio-system".to_string(), 1)]
    );
}

#[test]
fn swap_keeps_in_flight_checks_on_their_snapshot() {
    let s = setup(&config(json!({}), false, "1"));
    let (_handle, slot) = start_pending(&s, &request("reviews", "erin"));
    // New config: nothing is checked any more, and the metric counts 2.
    let mut next = config(json!({}), false, "2");
    next.rules.remove(0);
    let platform = s.pipeline.platform().clone();
    let prev = s.pipeline.snapshot();
    let snap = compile(
        &next,
        &s.registry,
        &platform,
        Some(&prev),
        &CompileOptions::default(),
    )
    .unwrap();
    s.pipeline.swap(snap);
    // The old request still completes through its backend.
    let calls = s.vt.http_requests();
    s.vt.respond_http(
        calls[0].0,
        Ok(HttpResponse {
            status: 200,
            headers: vec![],
            body: Bytes::new(),
        }),
    );
    assert!(slot.lock().take().expect("completed").is_allowed());
    // New requests see the new config.
    let (started, _) = start(&s, &request("reviews", "erin"));
    assert!(matches!(started, CheckStart::Done(_)));
    s.pipeline
        .worker(Arc::new(s.vt.clone()))
        .report(&request("reviews", "erin"));
    assert_eq!(s.counter.seen.lock().last().map(|x| x.1), Some(2));
}

#[test]
fn unchanged_handlers_survive_a_swap() {
    let s = setup(&config(json!({}), false, "1"));
    let platform = s.pipeline.platform().clone();
    let prev = s.pipeline.snapshot();
    let mut next = config(json!({}), false, "1");
    next.handlers[0] = handler("authz", "httpauthz", json!({"abandon": true}), false);
    let snap = compile(
        &next,
        &s.registry,
        &platform,
        Some(&prev),
        &CompileOptions::default(),
    )
    .unwrap();
    let same = |name: &str| {
        Arc::ptr_eq(
            &prev.handler(name).unwrap().handler,
            &snap.handler(name).unwrap().handler,
        )
    };
    assert!(
        same("count.istio-system"),
        "unchanged handler keeps its state"
    );
    assert!(
        !same("authz.istio-system"),
        "changed params rebuild the handler"
    );
}

#[test]
fn bad_config_is_rejected_with_object_and_field() {
    let s = setup(&config(json!({}), false, "1"));
    let platform = s.pipeline.platform().clone();
    let mut bad = config(json!({}), false, "1");
    bad.rules[0].r#match = "destination.service.name ==".into();
    bad.rules[1].actions[0].handler = "nope".into();
    bad.instances[1].template = "metrik".into();
    let err = compile(
        &bad,
        &s.registry,
        &platform,
        None,
        &CompileOptions::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("rule/istio-system/authz-reviews: field `match`"),
        "{text}"
    );
    assert!(
        text.contains("rule/istio-system/count-all: field `actions[0].handler`: no handler `nope`"),
        "{text}"
    );
    assert!(
        text.contains(
            "instance/istio-system/requests: field `template`: unknown template `metrik`"
        ),
        "{text}"
    );

    let mut unknown_adapter = config(json!({}), false, "1");
    unknown_adapter.handlers[1].adapter = "prometheus".into();
    let err = compile(
        &unknown_adapter,
        &s.registry,
        &platform,
        None,
        &CompileOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("adapter `prometheus` is not in this build"),
        "{err}"
    );
    let skipped = compile(
        &unknown_adapter,
        &s.registry,
        &platform,
        None,
        &CompileOptions {
            skip_unknown_adapters: true,
            ..Default::default()
        },
    )
    .expect("skipping unknown adapters");
    assert!(
        skipped.warnings.iter().any(|w| w.contains("prometheus")),
        "{:?}",
        skipped.warnings
    );
}

#[test]
fn instance_errors_are_counted_not_fatal() {
    // `value: source.port` has no default: absent, so the metric instance cannot be built.
    let s = setup(&config(json!({}), false, "source.port"));
    let worker = s.pipeline.worker(Arc::new(s.vt.clone()));
    let summary = worker.report(&request("reviews", "alice"));
    assert_eq!((summary.instances_sent, summary.instance_errors), (0, 1));
    assert_eq!(
        s.pipeline.stats().instance_errors.load(Ordering::Relaxed),
        1
    );
}

/// The config plus a quota of 2 units that every request charges 1 of.
fn config_with_quota() -> Config {
    let mut cfg = config(json!({}), false, "1");
    cfg.handlers
        .push(handler("quota", "fixedquota", json!({"limit": 2}), false));
    cfg.instances.push(instance(
        "requestcount",
        "quota",
        json!({"dimensions": {"svc": "destination.service.name"}}),
    ));
    cfg.rules
        .push(rule("quota", "", "quota", &["requestcount"]));
    config_builder::bind_quota(
        &mut cfg,
        "spec",
        "requestcount",
        1,
        vec![config_builder::service("*", "")],
    );
    cfg
}

fn answer(vt: &VirtualPlatform, status: u16) {
    let calls = vt.http_requests();
    assert_eq!(calls.len(), 1, "one backend call outstanding");
    vt.respond_http(
        calls[0].0,
        Ok(HttpResponse {
            status,
            headers: vec![],
            body: Bytes::new(),
        }),
    );
}

#[test]
fn quota_is_charged_after_an_async_precondition_allows() {
    let s = setup(&config_with_quota());
    // Denied by the backend: the quota is not charged.
    let (_h, slot) = start_pending(&s, &request("reviews", "mallory"));
    answer(&s.vt, 403);
    let a = slot.lock().take().expect("answered");
    assert_eq!(a.status.code, Code::PERMISSION_DENIED);
    assert!(a.quotas.is_empty());
    // Allowed: charged, after the backend answered, with the owned copy of the bag.
    for (i, expect_ok) in [true, true, false].into_iter().enumerate() {
        let (_h, slot) = start_pending(&s, &request("reviews", &format!("user{i}")));
        answer(&s.vt, 200);
        let a = slot.lock().take().expect("answered");
        assert_eq!(a.quotas.len(), 1);
        assert_eq!(a.is_allowed(), expect_ok, "{:?}", a.status);
    }
    // A cached precondition still charges the quota.
    let (started, _) = start(&s, &request("reviews", "user0"));
    let CheckStart::Done(a) = started else {
        panic!("cache hit")
    };
    assert!(a.cache_hit);
    assert_eq!(a.status.code, Code::RESOURCE_EXHAUSTED);
    // Inline precondition (ratings is not checked by the backend), quota exhausted.
    let (started, _) = start(&s, &request("ratings", "x"));
    let CheckStart::Done(a) = started else {
        panic!("inline")
    };
    assert_eq!(a.status.code, Code::RESOURCE_EXHAUSTED);
}

#[test]
fn cancel_before_the_precondition_answers_charges_nothing() {
    let s = setup(&config_with_quota());
    let (h, slot) = start_pending(&s, &request("reviews", "eve"));
    drop(h);
    answer(&s.vt, 200);
    assert!(slot.lock().is_none());
    // Both units are still there.
    for _ in 0..2 {
        let (started, _) = start(&s, &request("ratings", "x"));
        let CheckStart::Done(a) = started else {
            panic!("inline")
        };
        assert!(a.is_allowed());
    }
}

#[test]
fn a_backend_that_never_answers_times_out_under_its_policy() {
    for (fail_open, want) in [(false, Code::DEADLINE_EXCEEDED), (true, Code::OK)] {
        let mut cfg = config(json!({"hang": true}), fail_open, "1");
        cfg.handlers[0].dispatch.as_mut().unwrap().timeout = Some(prost_types::Duration {
            seconds: 0,
            nanos: 250_000_000,
        });
        let s = setup(&cfg);
        let (_h, slot) = start_pending(&s, &request("reviews", "zed"));
        s.vt.advance(StdDuration::from_millis(249));
        assert!(slot.lock().is_none());
        s.vt.advance(StdDuration::from_millis(1));
        let a = slot.lock().take().expect("timed out into a decision");
        assert_eq!(a.status.code, want, "fail_open={fail_open}");
        if !fail_open {
            assert!(
                a.status.message.contains("timed out"),
                "{}",
                a.status.message
            );
        }
        assert_eq!(
            s.pipeline.stats().handler_failures.load(Ordering::Relaxed),
            1
        );
    }
}

#[test]
fn failed_calls_are_retried_with_backoff() {
    let mut cfg = config(json!({}), false, "1");
    cfg.handlers[0].dispatch.as_mut().unwrap().retry = Some(v2::RetryPolicy {
        max_attempts: 3,
        initial_backoff: Some(prost_types::Duration {
            seconds: 0,
            nanos: 100_000_000,
        }),
        max_backoff: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
    });
    let s = setup(&cfg);
    let (_h, slot) = start_pending(&s, &request("reviews", "retry-me"));
    answer(&s.vt, 503);
    assert!(slot.lock().is_none(), "retrying, not failing");
    assert!(s.vt.http_requests().is_empty(), "waiting for the backoff");
    s.vt.advance(StdDuration::from_millis(100)); // the first retry waits up to 100ms
    answer(&s.vt, 200);
    assert!(slot.lock().take().expect("answered").is_allowed());

    // All three attempts fail: the failure policy (fail-close) applies.
    let (_h, slot) = start_pending(&s, &request("reviews", "unlucky"));
    for _ in 0..3 {
        answer(&s.vt, 503);
        s.vt.advance(StdDuration::from_millis(200));
    }
    let a = slot.lock().take().expect("answered");
    assert_eq!(a.status.code, Code::UNAVAILABLE);
    assert!(s.vt.http_requests().is_empty(), "no fourth attempt");
}
