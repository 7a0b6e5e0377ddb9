//! The Kubernetes API source on virtual time, the test answering each callout: LIST (paged),
//! watch events applied and resumed from the last resourceVersion, `410 Gone` and ERROR events
//! re-LIST, failures back off (1s, 2s, ...) and retry, and the last good inventory stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use mixer_core::pal::virtual_time::CalloutId;
use mixer_core::pal::{CalloutError, HttpRequest, HttpResponse};
use mixer_kubeenv::Stats;
use serde_json::{Value as Json, json};

fn api(extra: Json) -> Direct {
    let mut api = json!({"url": "http://127.0.0.1:8001", "token": "t0k", "watch_timeout": "5s"});
    if let (Json::Object(a), Json::Object(e)) = (&mut api, extra) {
        a.extend(e);
    }
    Direct::new(json!({ "kubernetes_api": api }))
}

/// The one outstanding request whose path starts with `prefix`.
fn take(d: &Direct, prefix: &str) -> (CalloutId, HttpRequest) {
    let reqs = d.vt.http_requests();
    let mut hits: Vec<_> = reqs
        .iter()
        .filter(|(_, r)| r.path.starts_with(prefix))
        .cloned()
        .collect();
    assert_eq!(hits.len(), 1, "one request for {prefix} in {reqs:?}");
    hits.remove(0)
}

fn none_for(d: &Direct, prefix: &str) {
    let reqs = d.vt.http_requests();
    assert!(
        !reqs.iter().any(|(_, r)| r.path.starts_with(prefix)),
        "no request for {prefix} expected: {reqs:?}"
    );
}

fn answer(d: &Direct, id: CalloutId, status: u16, body: String) {
    assert!(d.vt.respond_http(
        id,
        Ok(HttpResponse {
            status,
            headers: vec![],
            body: Bytes::from(body),
        })
    ));
}

/// A LIST answer: API list items carry no `kind`.
fn list_body(kind: &str, rv: &str, items: Vec<Json>, cont: &str) -> String {
    let items: Vec<Json> = items
        .into_iter()
        .map(|mut i| {
            i.as_object_mut().unwrap().remove("kind");
            i
        })
        .collect();
    json!({"kind": kind, "apiVersion": "v1",
        "metadata": {"resourceVersion": rv, "continue": cont}, "items": items})
    .to_string()
}

fn with_rv(mut o: Json, rv: &str) -> Json {
    o["metadata"]["resourceVersion"] = json!(rv);
    o
}

fn events(evs: &[(&str, Json)]) -> String {
    evs.iter()
        .map(|(t, o)| json!({"type": t, "object": o}).to_string() + "\n")
        .collect()
}

fn workload_at(d: &Direct, addr: &str) -> Option<String> {
    d.produce(&[("source.ip", ip(addr))])
        .get("source_workload_name")
        .map(|v| v.as_str().unwrap().to_string())
}

fn productpage() -> Json {
    bookinfo_items().remove(0)
}

fn reviews_v1() -> Json {
    bookinfo_items().remove(1)
}

/// Lists pods (productpage, reviews-v1 at rv 100) and services (rv 50).
fn listed() -> Direct {
    let d = api(json!({}));
    let (id, req) = take(&d, "/api/v1/pods");
    assert_eq!(req.path, "/api/v1/pods?limit=500");
    assert_eq!(req.authority, "127.0.0.1:8001");
    assert!(
        req.headers
            .contains(&("Authorization".to_string(), "Bearer t0k".to_string())),
        "{:?}",
        req.headers
    );
    answer(
        &d,
        id,
        200,
        list_body("PodList", "100", vec![productpage(), reviews_v1()], ""),
    );
    let (id, req) = take(&d, "/api/v1/services");
    assert_eq!(req.path, "/api/v1/services?limit=500");
    let svcs = vec![service("reviews", "default", json!({"app": "reviews"}))];
    answer(&d, id, 200, list_body("ServiceList", "50", svcs, ""));
    d
}

#[test]
fn list_then_watch_applies_events_and_resumes() {
    let d = listed();
    let st = d.handler().stats();
    assert_eq!(Stats::get(&st.api_lists), 2);
    assert_eq!(
        workload_at(&d, "10.1.0.10").as_deref(),
        Some("productpage-v1")
    );
    let out = d.produce(&[("destination.ip", ip("10.1.0.11"))]);
    assert_eq!(out["destination_service_name"], s("reviews"));

    let (id, req) = take(&d, "/api/v1/pods");
    assert_eq!(
        req.path,
        "/api/v1/pods?watch=1&resourceVersion=100&timeoutSeconds=5&allowWatchBookmarks=true"
    );
    assert!(req.timeout > Duration::from_secs(5), "outlives the watch");
    let mut moved = productpage();
    moved["metadata"]["labels"]["version"] = json!("v9");
    let ratings = bookinfo_items().remove(3);
    let body = events(&[
        ("ADDED", with_rv(ratings, "101")),
        ("MODIFIED", with_rv(moved, "102")),
        ("DELETED", with_rv(reviews_v1(), "103")),
        (
            "BOOKMARK",
            json!({"kind": "Pod", "metadata": {"resourceVersion": "110"}}),
        ),
    ]) + "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Po"; // cut short: skipped
    answer(&d, id, 200, body);
    assert_eq!(workload_at(&d, "10.1.0.13").as_deref(), Some("ratings-v1"));
    assert_eq!(workload_at(&d, "10.1.0.11"), None, "deleted");
    let labels = d.produce(&[("source.ip", ip("10.1.0.10"))])["source_labels"].clone();
    assert_eq!(labels.as_string_map().unwrap().get("version"), Some("v9"));
    assert_eq!(Stats::get(&st.api_events), 4);

    let (_, req) = take(&d, "/api/v1/pods");
    assert!(
        req.path.contains("watch=1&resourceVersion=110&"),
        "resumes from the bookmark: {}",
        req.path
    );
    // A service added by its own watch selects a pod.
    let (id, req) = take(&d, "/api/v1/services");
    assert!(req.path.contains("resourceVersion=50&"), "{}", req.path);
    let pp = service("productpage", "default", json!({"app": "productpage"}));
    answer(&d, id, 200, events(&[("ADDED", with_rv(pp, "51"))]));
    let out = d.produce(&[("destination.ip", ip("10.1.0.10"))]);
    assert_eq!(out["destination_service_name"], s("productpage"));
    assert!(
        take(&d, "/api/v1/services")
            .1
            .path
            .contains("resourceVersion=51&")
    );
}

#[test]
fn gone_relists_and_replaces_the_objects() {
    let d = listed();
    let st = d.handler().stats();
    let (id, _) = take(&d, "/api/v1/pods");
    answer(&d, id, 410, String::new());
    let (id, req) = take(&d, "/api/v1/pods");
    assert_eq!(req.path, "/api/v1/pods?limit=500", "a LIST again");
    assert_eq!(
        workload_at(&d, "10.1.0.11").as_deref(),
        Some("reviews-v1"),
        "the last good inventory serves meanwhile"
    );
    answer(
        &d,
        id,
        200,
        list_body("PodList", "200", vec![productpage()], ""),
    );
    assert_eq!(workload_at(&d, "10.1.0.11"), None, "gone from the new list");
    assert_eq!(
        workload_at(&d, "10.1.0.10").as_deref(),
        Some("productpage-v1")
    );
    let (id, req) = take(&d, "/api/v1/pods");
    assert!(req.path.contains("resourceVersion=200&"), "{}", req.path);

    // An ERROR event saying 410 re-lists too, after applying the events before it.
    let body = events(&[
        ("ADDED", with_rv(reviews_v1(), "201")),
        (
            "ERROR",
            json!({"kind": "Status", "status": "Failure", "code": 410,
                "reason": "Expired", "message": "too old resource version: 1 (201)"}),
        ),
    ]);
    answer(&d, id, 200, body);
    assert_eq!(workload_at(&d, "10.1.0.11").as_deref(), Some("reviews-v1"));
    let (_, req) = take(&d, "/api/v1/pods");
    assert_eq!(req.path, "/api/v1/pods?limit=500");
    assert_eq!(Stats::get(&st.api_relists), 2);
    assert_eq!(Stats::get(&st.api_failures), 0);
}

#[test]
fn failures_back_off_and_retry_from_the_same_version() {
    let d = listed();
    let st = d.handler().stats();
    for (i, delay_ms) in [1_000u64, 2_000, 4_000].into_iter().enumerate() {
        let (id, req) = take(&d, "/api/v1/pods");
        assert!(req.path.contains("resourceVersion=100&"), "{}", req.path);
        if i == 1 {
            answer(&d, id, 503, "unavailable".into());
        } else {
            d.vt.respond_http(id, Err(CalloutError::Connection("refused".into())));
        }
        none_for(&d, "/api/v1/pods");
        d.vt.advance(Duration::from_millis(delay_ms - 1));
        none_for(&d, "/api/v1/pods");
        d.vt.advance(Duration::from_millis(1));
    }
    assert_eq!(Stats::get(&st.api_failures), 3);
    assert!(st.last_error().unwrap().contains("WATCH pods"));
    assert_eq!(
        workload_at(&d, "10.1.0.10").as_deref(),
        Some("productpage-v1")
    );
    // A watch that ends normally resets the backoff.
    let (id, _) = take(&d, "/api/v1/pods");
    answer(
        &d,
        id,
        200,
        events(&[("BOOKMARK", json!({"metadata": {"resourceVersion": "120"}}))]),
    );
    let (id, _) = take(&d, "/api/v1/pods");
    d.vt.respond_http(id, Err(CalloutError::Timeout));
    d.vt.advance(Duration::from_secs(1));
    assert!(
        take(&d, "/api/v1/pods")
            .1
            .path
            .contains("resourceVersion=120&")
    );
}

#[test]
fn a_failed_list_is_retried_after_a_backoff() {
    let d = api(json!({"namespace": "default"}));
    let (id, req) = take(&d, "/api/v1/namespaces/default/pods");
    assert_eq!(req.path, "/api/v1/namespaces/default/pods?limit=500");
    answer(&d, id, 403, "forbidden".into());
    assert!(
        d.handler()
            .stats()
            .last_error()
            .unwrap()
            .contains("HTTP 403")
    );
    none_for(&d, "/api/v1/namespaces/default/pods");
    d.vt.advance(Duration::from_secs(1));
    let (id, _) = take(&d, "/api/v1/namespaces/default/pods");
    answer(&d, id, 200, "not json".into());
    d.vt.advance(Duration::from_millis(1_999));
    none_for(&d, "/api/v1/namespaces/default/pods");
    d.vt.advance(Duration::from_millis(1));
    let (id, _) = take(&d, "/api/v1/namespaces/default/pods");
    answer(
        &d,
        id,
        200,
        list_body("PodList", "7", vec![productpage()], ""),
    );
    assert_eq!(
        workload_at(&d, "10.1.0.10").as_deref(),
        Some("productpage-v1")
    );
}

#[test]
fn paged_lists_are_joined() {
    let d = api(json!({}));
    let (id, _) = take(&d, "/api/v1/pods");
    answer(
        &d,
        id,
        200,
        list_body("PodList", "300", vec![productpage()], "page=2/x"),
    );
    assert_eq!(
        workload_at(&d, "10.1.0.10"),
        None,
        "not published before the last page"
    );
    let (id, req) = take(&d, "/api/v1/pods");
    assert_eq!(req.path, "/api/v1/pods?limit=500&continue=page%3D2%2Fx");
    answer(
        &d,
        id,
        200,
        list_body("PodList", "300", vec![reviews_v1()], ""),
    );
    assert_eq!(
        workload_at(&d, "10.1.0.10").as_deref(),
        Some("productpage-v1")
    );
    assert_eq!(workload_at(&d, "10.1.0.11").as_deref(), Some("reviews-v1"));
    assert!(
        take(&d, "/api/v1/pods")
            .1
            .path
            .contains("watch=1&resourceVersion=300&")
    );
}

#[test]
fn an_empty_watch_that_ends_at_once_waits_before_the_next() {
    let d = listed();
    let (id, _) = take(&d, "/api/v1/pods");
    answer(&d, id, 200, String::new());
    none_for(&d, "/api/v1/pods");
    d.vt.advance(Duration::from_secs(1));
    let (id, _) = take(&d, "/api/v1/pods");
    // One that lasted its time goes again at once.
    d.vt.advance(Duration::from_secs(5));
    answer(&d, id, 200, String::new());
    take(&d, "/api/v1/pods");
}

#[test]
fn a_dropped_handler_cancels_its_callouts() {
    let d = listed();
    assert_eq!(d.vt.http_requests().len(), 2, "two watches");
    let vt = d.vt.clone();
    drop(d);
    vt.run_posted();
    assert!(vt.http_requests().is_empty());
    assert_eq!(vt.pending_timers(), 0);
}
