//! `memquota` through the pipeline's quota path: Bookinfo's overrides, fixed and rolling windows
//! on virtual time, deduplication, best effort, and 4 threads never granting past the limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::adapter::{QuotaArgs, QuotaResult};
use mixer_core::config_builder::{bind_quota, handler, instance, rule};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::{Code, CompileOptions, Config, Pipeline, QuotaRequest, compile};
use mixer_proto::v2;
use serde_json::json;

fn config(params: serde_json::Value) -> Config {
    Config {
        handlers: vec![handler("quotahandler", "memquota", params)],
        instances: vec![instance(
            "requestcountquota",
            "quota",
            json!({"dimensions": {
                "source": "request.headers[\"x-forwarded-for\"] | \"unknown\"",
                "destination": "destination.labels[\"app\"] | destination.service.name | \"unknown\"",
                "destinationVersion": "destination.labels[\"version\"] | \"unknown\"",
            }}),
        )],
        rules: vec![rule("quota", "", "quotahandler", &["requestcountquota"])],
        ..Default::default()
    }
}

fn bookinfo_params() -> serde_json::Value {
    json!({"quotas": [{
        "name": "requestcountquota.instance.istio-system",
        "maxAmount": 500,
        "validDuration": "1s",
        "overrides": [
            {"dimensions": {"destination": "reviews"}, "maxAmount": 1, "validDuration": "5s"},
            {"dimensions": {"destination": "productpage", "source": "10.28.11.20"}, "maxAmount": 500, "validDuration": "1s"},
            {"dimensions": {"destination": "productpage"}, "maxAmount": 2, "validDuration": "5s"}
        ]
    }]})
}

fn setup(params: serde_json::Value) -> (VirtualPlatform, Pipeline) {
    let vt = VirtualPlatform::new();
    let snap = compile(
        &config(params),
        &mixer_adapters::registry(),
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    (vt.clone(), Pipeline::new(snap, vt.platform()))
}

fn request(app: &str, xff: Option<&str>) -> Attributes<'static> {
    let labels: StringMap = [("app".to_string(), app.to_string())].into_iter().collect();
    let mut bag = Attributes::new().with(wk::DESTINATION_LABELS, Value::string_map(labels));
    if let Some(ip) = xff {
        let h: StringMap = [("x-forwarded-for".to_string(), ip.to_string())]
            .into_iter()
            .collect();
        bag.set(wk::REQUEST_HEADERS, Value::string_map(h));
    }
    bag
}

fn charge(
    vt: &VirtualPlatform,
    p: &Pipeline,
    bag: &Attributes<'_>,
    args: QuotaArgs,
) -> QuotaResult {
    let req = QuotaRequest {
        name: "requestcountquota".into(),
        args,
    };
    let results = p
        .worker(Arc::new(vt.clone()))
        .quota(bag, &[req], |_| {})
        .expect("memquota answers in process");
    assert_eq!(results.len(), 1);
    results.into_iter().next().map(|(_, r)| r).unwrap()
}

fn units(amount: i64) -> QuotaArgs {
    QuotaArgs {
        amount,
        ..Default::default()
    }
}

fn one() -> QuotaArgs {
    units(1)
}

#[test]
fn bookinfo_overrides_apply_first_match() {
    let (vt, p) = setup(bookinfo_params());
    let granted = |bag: &Attributes<'_>| charge(&vt, &p, bag, one()).granted;
    // productpage: 2 per 5s
    let pp = request("productpage", None);
    assert_eq!((granted(&pp), granted(&pp), granted(&pp)), (1, 1, 0));
    let r = charge(&vt, &p, &pp, one());
    assert_eq!(r.status.code, Code::RESOURCE_EXHAUSTED);
    // ...unless from 10.28.11.20: 500 per second
    let special = request("productpage", Some("10.28.11.20"));
    assert!((0..100).all(|_| granted(&special) == 1));
    // reviews: 1 per 5s
    let rv = request("reviews", None);
    assert_eq!((granted(&rv), granted(&rv)), (1, 0));
    // anything else: 500 per second
    let details = request("details", None);
    assert!((0..500).all(|_| granted(&details) == 1));
    assert_eq!(granted(&details), 0);
    // windows pass
    vt.advance(Duration::from_secs(5));
    assert_eq!((granted(&pp), granted(&rv), granted(&details)), (1, 1, 1));
}

fn window_params(algorithm: &str) -> serde_json::Value {
    json!({"rateLimitAlgorithm": algorithm, "quotas": [
        {"name": "requestcountquota", "maxAmount": 10, "validDuration": "1s"}
    ]})
}

#[test]
fn fixed_window_resets_at_the_boundary() {
    let (vt, p) = setup(window_params("FIXED_WINDOW"));
    let bag = request("a", None);
    vt.advance(Duration::from_millis(900));
    let r = charge(&vt, &p, &bag, units(10));
    assert_eq!(
        (r.granted, r.valid_duration),
        (10, mixer_attr::Duration::from_millis(100))
    );
    assert_eq!(charge(&vt, &p, &bag, one()).granted, 0);
    vt.advance(Duration::from_millis(100));
    assert_eq!(charge(&vt, &p, &bag, units(10)).granted, 10, "new window");
}

#[test]
fn rolling_window_releases_gradually() {
    let (vt, p) = setup(window_params("ROLLING_WINDOW"));
    let bag = request("a", None);
    vt.advance(Duration::from_millis(900));
    assert_eq!(charge(&vt, &p, &bag, units(10)).granted, 10);
    vt.advance(Duration::from_millis(100));
    assert_eq!(
        charge(&vt, &p, &bag, one()).granted,
        0,
        "still within the last second"
    );
    vt.advance(Duration::from_millis(900));
    assert_eq!(charge(&vt, &p, &bag, units(10)).granted, 10);
}

#[test]
fn best_effort_and_deduplication() {
    let mut params = window_params("FIXED_WINDOW");
    params["minDeduplicationDuration"] = json!("1s");
    let (vt, p) = setup(params);
    let bag = request("a", None);
    let r = charge(
        &vt,
        &p,
        &bag,
        QuotaArgs {
            amount: 8,
            best_effort: false,
            deduplication_id: "req-1".into(),
        },
    );
    assert_eq!(r.granted, 8);
    let again = charge(
        &vt,
        &p,
        &bag,
        QuotaArgs {
            amount: 8,
            best_effort: false,
            deduplication_id: "req-1".into(),
        },
    );
    assert_eq!(
        again.granted, 8,
        "a retried request gets its first answer and is not charged twice"
    );
    assert_eq!(charge(&vt, &p, &bag, units(5)).granted, 0, "all or nothing");
    assert_eq!(
        charge(
            &vt,
            &p,
            &bag,
            QuotaArgs {
                amount: 5,
                best_effort: true,
                ..Default::default()
            }
        )
        .granted,
        2
    );
    assert_eq!(
        charge(&vt, &p, &bag, units(0)).status.code,
        Code::INVALID_ARGUMENT
    );
}

#[test]
fn four_threads_never_exceed_the_limit() {
    for algorithm in ["FIXED_WINDOW", "ROLLING_WINDOW"] {
        let params = json!({"rateLimitAlgorithm": algorithm, "quotas": [
            {"name": "requestcountquota", "maxAmount": 1000, "validDuration": "1h"}
        ]});
        let (vt, p) = setup(params);
        let granted = Arc::new(AtomicI64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (vt, p, granted) = (vt.clone(), p.clone(), granted.clone());
                std::thread::spawn(move || {
                    let bag = request("a", None);
                    for i in 0..600 {
                        let amount = 1 + (i + t) % 3;
                        let args = QuotaArgs {
                            amount,
                            best_effort: i % 2 == 0,
                            ..Default::default()
                        };
                        granted.fetch_add(charge(&vt, &p, &bag, args).granted, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            granted.load(Ordering::Relaxed),
            1000,
            "{algorithm}: exactly the limit, never more"
        );
    }
}

#[test]
fn bad_params_are_rejected() {
    let vt = VirtualPlatform::new();
    for (params, field) in [
        (
            json!({"quotas": [{"name": "requestcountquota", "maxAmount": -1}]}),
            "params.quotas[0].maxAmount",
        ),
        (
            json!({"quotas": [{"name": "other", "maxAmount": 1}]}),
            "params.quotas",
        ),
        (
            json!({"quotas": [{"name": "requestcountquota", "maxAmount": 1, "validDuration": "x"}]}),
            "params.quotas[0].validDuration",
        ),
        (
            json!({"rateLimitAlgorithm": "LEAKY", "quotas": [{"name": "requestcountquota", "maxAmount": 1}]}),
            "params.rateLimitAlgorithm",
        ),
    ] {
        let err = compile(
            &config(params),
            &mixer_adapters::registry(),
            &vt.platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.0[0].field, field, "{err}");
    }
}

fn with_quota_spec(mut cfg: Config, services: Vec<v2::IstioService>) -> Config {
    bind_quota(&mut cfg, "request-count", "requestcountquota", 1, services);
    cfg
}

#[test]
fn check_charges_quota_specs_like_the_bookinfo_tutorial() {
    // productpage is bound to request-count (2 per 5s for productpage); details is not bound.
    let cfg = with_quota_spec(
        config(bookinfo_params()),
        vec![v2::IstioService {
            name: "productpage".into(),
            namespace: "default".into(),
            ..Default::default()
        }],
    );
    let vt = VirtualPlatform::new();
    let snap = compile(
        &cfg,
        &mixer_adapters::registry(),
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    let p = Pipeline::new(snap, vt.platform());
    let to = |svc: &str| {
        request(svc, None)
            .with(
                wk::DESTINATION_SERVICE_NAME,
                Value::String(svc.to_string().into()),
            )
            .with(wk::DESTINATION_SERVICE_NAMESPACE, Value::str("default"))
    };
    let check = |bag: &Attributes<'_>| match p.worker(Arc::new(vt.clone())).check(bag, |_| {}) {
        mixer_core::CheckStart::Done(a) => a,
        mixer_core::CheckStart::Pending(_) => panic!("in process"),
    };
    let a = check(&to("productpage"));
    assert!(a.is_allowed());
    assert_eq!(a.quotas.len(), 1);
    assert_eq!(
        (a.quotas[0].0.as_str(), a.quotas[0].1.granted),
        ("requestcountquota", 1)
    );
    assert!(check(&to("productpage")).is_allowed());
    let third = check(&to("productpage"));
    assert_eq!(third.status.code, Code::RESOURCE_EXHAUSTED);
    assert_eq!(
        third.status.message,
        "Quota is exhausted for: requestcountquota"
    );
    // Unbound services charge nothing.
    for _ in 0..10 {
        let d = check(&to("details"));
        assert!(d.is_allowed() && d.quotas.is_empty());
    }
    vt.advance(Duration::from_secs(5));
    assert!(check(&to("productpage")).is_allowed(), "the window passed");
}
