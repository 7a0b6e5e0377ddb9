//! The check cache: the C++ Mixer client's check-cache cases, ported, plus concurrency and
//! key-ambiguity cases it could not pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mixer_attr::{
    Attributes, ReferenceRecorder, ReferencedAttributes, StringMap, Value, well_known as wk,
};
use mixer_core::cache::{CheckCache, CheckCacheConfig};
use mixer_core::decision::DecisionBuilder;
use mixer_core::pal::MonoTime;
use mixer_core::{CheckResult, Code, Decision, Status};

const MS: u64 = 1_000_000;

fn decision(
    refs: ReferencedAttributes,
    use_count: i32,
    duration_ms: i64,
    code: Code,
) -> Arc<Decision> {
    let mut b = DecisionBuilder::new();
    let status = if code == Code::OK {
        Status::ok()
    } else {
        Status::new(code, "x")
    };
    b.add(
        &CheckResult::deny(
            status,
            mixer_attr::Duration::from_millis(duration_ms),
            use_count,
        ),
        false,
    );
    Arc::new(b.finish(refs))
}

fn refs(f: impl FnOnce(&mut ReferencedAttributes)) -> ReferencedAttributes {
    let mut r = ReferencedAttributes::new();
    f(&mut r);
    r
}

fn target(service: &str) -> Attributes<'static> {
    Attributes::new().with(
        wk::DESTINATION_SERVICE_NAME,
        Value::String(service.to_string().into()),
    )
}

fn cache() -> CheckCache {
    CheckCache::new(CheckCacheConfig::default())
}

#[test]
fn zero_size_disables_the_cache() {
    let c = CheckCache::new(CheckCacheConfig {
        max_entries: 0,
        ..Default::default()
    });
    let bag = target("a");
    assert!(c.lookup(&bag, MonoTime(0)).is_none());
    c.insert(
        decision(ReferencedAttributes::new(), 1000, 60_000, Code::OK),
        &bag,
        MonoTime(0),
    );
    assert!(c.lookup(&bag, MonoTime(0)).is_none());
}

#[test]
fn long_validity_serves_many_uses() {
    let c = cache();
    let bag = target("a");
    c.insert(
        decision(ReferencedAttributes::new(), 10_000, 3_600_000, Code::OK),
        &bag,
        MonoTime(0),
    );
    for i in 0..1000 {
        assert!(c.lookup(&bag, MonoTime(i * MS)).is_some(), "use {i}");
    }
}

#[test]
fn expired_by_use_count() {
    let c = cache();
    let bag = target("a");
    assert!(c.lookup(&bag, MonoTime(0)).is_none());
    c.insert(
        decision(ReferencedAttributes::new(), 3, 60_000, Code::OK),
        &bag,
        MonoTime(0),
    );
    for t in 1..=3 {
        assert!(c.lookup(&bag, MonoTime(t * MS)).is_some(), "use {t}");
    }
    assert!(
        c.lookup(&bag, MonoTime(4 * MS)).is_none(),
        "the 4th one misses"
    );
}

#[test]
fn expired_by_duration() {
    let c = cache();
    let bag = target("a");
    c.insert(
        decision(ReferencedAttributes::new(), 1000, 10, Code::OK),
        &bag,
        MonoTime(0),
    );
    assert!(c.lookup(&bag, MonoTime(MS)).is_some());
    assert!(c.lookup(&bag, MonoTime(11 * MS)).is_none());
    assert_eq!(c.stats().expirations.load(Ordering::Relaxed), 1);
}

#[test]
fn denials_are_cached_too() {
    let c = cache();
    let bag = target("a");
    c.insert(
        decision(ReferencedAttributes::new(), 10, 1000, Code::UNAVAILABLE),
        &bag,
        MonoTime(0),
    );
    assert_eq!(
        c.lookup(&bag, MonoTime(0)).unwrap().status.code,
        Code::UNAVAILABLE
    );
}

#[test]
fn mismatched_referenced_is_not_cached() {
    // The decision claims destination.service.name absent, but the request carries it.
    let c = cache();
    let bag = target("a");
    let r = refs(|r| r.attribute(wk::DESTINATION_SERVICE_NAME, false));
    c.insert(decision(r, 1000, 60_000, Code::OK), &bag, MonoTime(0));
    assert!(c.lookup(&bag, MonoTime(0)).is_none());
}

#[test]
fn two_keys_of_one_shape() {
    let c = cache();
    let r = refs(|r| r.attribute(wk::DESTINATION_SERVICE_NAME, true));
    let (a, b) = (
        target("this-is-a-string-value"),
        target("different target service"),
    );
    c.insert(decision(r.clone(), 1000, 60_000, Code::OK), &a, MonoTime(0));
    assert!(c.lookup(&a, MonoTime(0)).is_some());
    assert!(
        c.lookup(&b, MonoTime(0)).is_none(),
        "different value, different key"
    );
    c.insert(
        decision(r, 1000, 60_000, Code::PERMISSION_DENIED),
        &b,
        MonoTime(0),
    );
    assert_eq!(
        c.lookup(&b, MonoTime(0)).unwrap().status.code,
        Code::PERMISSION_DENIED
    );
    assert!(
        c.lookup(&a, MonoTime(0)).unwrap().is_allowed(),
        "the first key is still there"
    );
}

#[test]
fn two_shapes() {
    let c = cache();
    let a = target("svc");
    let b = Attributes::new().with(wk::DESTINATION_NAME, Value::str("target name"));
    c.insert(
        decision(
            refs(|r| r.attribute(wk::DESTINATION_SERVICE_NAME, true)),
            1000,
            60_000,
            Code::OK,
        ),
        &a,
        MonoTime(0),
    );
    assert!(c.lookup(&b, MonoTime(0)).is_none());
    c.insert(
        decision(
            refs(|r| r.attribute(wk::DESTINATION_NAME, true)),
            1000,
            60_000,
            Code::OK,
        ),
        &b,
        MonoTime(0),
    );
    assert!(c.lookup(&a, MonoTime(0)).is_some());
    assert!(c.lookup(&b, MonoTime(0)).is_some());
}

fn headers(pairs: &[(&str, &str)]) -> Value<'static> {
    Value::string_map(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<StringMap>(),
    )
}

#[test]
fn two_header_maps_keyed_on_the_referenced_key_only() {
    let c = cache();
    let r = refs(|r| {
        r.attribute(wk::REQUEST_HEADERS, true);
        r.map_key(wk::REQUEST_HEADERS, "user-agent", true);
        r.map_key(wk::REQUEST_HEADERS, "x-debug", false);
    });
    let req = |ua: &str, id: &str| {
        Attributes::new().with(
            wk::REQUEST_HEADERS,
            headers(&[("user-agent", ua), ("x-request-id", id)]),
        )
    };
    c.insert(
        decision(r, 1000, 60_000, Code::OK),
        &req("curl", "1"),
        MonoTime(0),
    );
    assert!(
        c.lookup(&req("curl", "2"), MonoTime(0)).is_some(),
        "x-request-id was not referenced"
    );
    assert!(
        c.lookup(&req("wget", "1"), MonoTime(0)).is_none(),
        "user-agent differs"
    );
    let with_debug = Attributes::new().with(
        wk::REQUEST_HEADERS,
        headers(&[("user-agent", "curl"), ("x-debug", "1")]),
    );
    assert!(
        c.lookup(&with_debug, MonoTime(0)).is_none(),
        "x-debug must still be absent"
    );
    assert!(
        c.lookup(&Attributes::new(), MonoTime(0)).is_none(),
        "no headers at all"
    );
}

#[test]
fn keys_are_unambiguous() {
    // Values whose naive concatenations collide must not share an entry.
    let c = cache();
    let r = refs(|r| {
        r.attribute(wk::SOURCE_NAME, true);
        r.attribute(wk::SOURCE_NAMESPACE, true);
    });
    let bag = |a: &str, b: &str| {
        Attributes::new()
            .with(wk::SOURCE_NAME, Value::String(a.to_string().into()))
            .with(wk::SOURCE_NAMESPACE, Value::String(b.to_string().into()))
    };
    c.insert(
        decision(r.clone(), 1000, 60_000, Code::PERMISSION_DENIED),
        &bag("ab", "c"),
        MonoTime(0),
    );
    assert!(c.lookup(&bag("a", "bc"), MonoTime(0)).is_none());
    assert!(c.lookup(&bag("abc", ""), MonoTime(0)).is_none());
    // Same bytes, different types.
    let r2 = refs(|r| r.attribute(wk::RESPONSE_CODE, true));
    c.insert(
        decision(r2, 1000, 60_000, Code::PERMISSION_DENIED),
        &Attributes::new().with(wk::RESPONSE_CODE, Value::Int64(1)),
        MonoTime(0),
    );
    assert!(
        c.lookup(
            &Attributes::new().with(wk::RESPONSE_CODE, Value::Int64(2)),
            MonoTime(0)
        )
        .is_none()
    );
}

#[test]
fn lru_bound_evicts_and_counts() {
    let c = CheckCache::new(CheckCacheConfig {
        max_entries: 4,
        shards: 1,
        max_shapes: 8,
    });
    let r = refs(|r| r.attribute(wk::DESTINATION_SERVICE_NAME, true));
    for i in 0..10 {
        c.insert(
            decision(r.clone(), 1000, 60_000, Code::OK),
            &target(&format!("s{i}")),
            MonoTime(0),
        );
    }
    assert_eq!(c.len(), 4);
    assert_eq!(c.stats().evictions.load(Ordering::Relaxed), 6);
    assert!(c.lookup(&target("s9"), MonoTime(0)).is_some());
    assert!(c.lookup(&target("s0"), MonoTime(0)).is_none());
}

#[test]
fn concurrent_hits_never_exceed_the_use_count() {
    for round in 0..20 {
        let c = Arc::new(cache());
        let bag = target("a");
        let granted = 100 + round;
        c.insert(
            decision(ReferencedAttributes::new(), granted, 60_000, Code::OK),
            &bag,
            MonoTime(0),
        );
        let served = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (c, served) = (c.clone(), served.clone());
                std::thread::spawn(move || {
                    let bag = target("a");
                    for _ in 0..100 {
                        if c.lookup(&bag, MonoTime(0)).is_some() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            served.load(Ordering::Relaxed),
            granted as usize,
            "round {round}"
        );
    }
}
