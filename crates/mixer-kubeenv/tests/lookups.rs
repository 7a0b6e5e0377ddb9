//! Lookups on an inventory file: by uid and by IP, workload and owner derivation, the
//! destination's service by selector and container by port, nothing for unknown pods, an
//! inactive handler without sources, params errors, and repeated lookups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mixer_core::adapter::AttributeProducer as _;
use mixer_core::{CompileOptions, compile};
use serde_json::json;

fn bookinfo() -> Direct {
    let path = inventory_file(bookinfo_items());
    Direct::new(json!({ "inventory_file": path }))
}

const PRODUCTPAGE: &str = "kubernetes://productpage-v1-7d9f8b5c6d-x7k2p.default";

#[test]
fn source_by_uid_gives_pod_workload_and_owner() {
    let d = bookinfo();
    let out = d.produce(&[("source.uid", s(PRODUCTPAGE))]);
    assert_eq!(out["source_pod_uid"], s(PRODUCTPAGE));
    assert_eq!(out["source_pod_name"], s("productpage-v1-7d9f8b5c6d-x7k2p"));
    assert_eq!(out["source_namespace"], s("default"));
    assert_eq!(out["source_pod_ip"], ip("10.1.0.10"));
    assert_eq!(out["source_host_ip"], ip("10.128.0.7"));
    assert_eq!(out["source_service_account_name"], s("default-sa"));
    assert_eq!(
        out["source_labels"],
        labels(&[
            ("app", "productpage"),
            ("version", "v1"),
            ("pod-template-hash", "7d9f8b5c6d")
        ])
    );
    assert_eq!(out["source_workload_name"], s("productpage-v1"));
    assert_eq!(out["source_workload_namespace"], s("default"));
    assert_eq!(
        out["source_workload_uid"],
        s("istio://default/workloads/productpage-v1")
    );
    assert_eq!(
        out["source_owner"],
        s("kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1")
    );
    assert!(
        !out.keys().any(|k| k.starts_with("destination_")),
        "no destination given: {out:?}"
    );
}

#[test]
fn destination_by_ip_gives_container_and_service() {
    let d = bookinfo();
    let out = d.produce(&[
        ("destination.ip", ip("10.1.0.12")),
        ("destination.port", mixer_attr::Value::Int64(9080)),
    ]);
    assert_eq!(out["destination_pod_name"], s("reviews-v2-6c8d9f5b7-x7k2p"));
    assert_eq!(out["destination_workload_name"], s("reviews-v2"));
    assert_eq!(out["destination_container_name"], s("app"));
    // `reviews` and `reviews-v2` both select it: the first by name wins.
    assert_eq!(out["destination_service_name"], s("reviews"));
    assert_eq!(out["destination_service_namespace"], s("default"));
    assert_eq!(
        out["destination_service_host"],
        s("reviews.default.svc.cluster.local")
    );
    assert_eq!(
        out["destination_service_uid"],
        s("istio://default/services/reviews")
    );
    let proxy_port = d.produce(&[
        ("destination.ip", ip("10.1.0.12")),
        ("destination.port", mixer_attr::Value::Int64(15090)),
    ]);
    assert_eq!(proxy_port["destination_container_name"], s("istio-proxy"));
    let no_port = d.produce(&[("destination.ip", ip("10.1.0.12"))]);
    assert!(!no_port.contains_key("destination_container_name"));
}

#[test]
fn uid_forms_and_origin() {
    let d = bookinfo();
    let name_ns = d.produce(&[("source.uid", s("ratings-v1-84c9d8b5f-x7k2p.default"))]);
    assert_eq!(name_ns["source_workload_name"], s("ratings-v1"));
    let ip_uid = d.produce(&[("source.uid", s("10.1.0.11"))]);
    assert_eq!(ip_uid["source_workload_name"], s("reviews-v1"));
    // An unknown uid falls back to the IP.
    let fallback = d.produce(&[
        ("source.uid", s("kubernetes://gone-pod.default")),
        ("source.ip", ip("10.1.1.1")),
    ]);
    assert_eq!(fallback["source_pod_name"], s("db-0"));
    let origin = d.produce(&[("origin.ip", ip("::ffff:10.1.0.10"))]);
    assert_eq!(origin["origin_workload_name"], s("productpage-v1"));
    assert!(!origin.contains_key("source_pod_name"));
}

#[test]
fn workloads_of_every_controller_kind() {
    let d = bookinfo();
    for (ip_addr, name, ns, owner) in [
        (
            "10.1.1.1",
            "db",
            "data",
            "kubernetes://apis/apps/v1/namespaces/data/statefulsets/db",
        ),
        (
            "10.1.1.2",
            "fluentd",
            "logging",
            "kubernetes://apis/apps/v1/namespaces/logging/daemonsets/fluentd",
        ),
        (
            "10.1.1.3",
            "migrate",
            "data",
            "kubernetes://apis/batch/v1/namespaces/data/jobs/migrate",
        ),
        (
            "10.1.1.4",
            "debug",
            "default",
            "kubernetes://apis/v1/namespaces/default/pods/debug",
        ),
    ] {
        let out = d.produce(&[("source.ip", ip(ip_addr))]);
        assert_eq!(out["source_workload_name"], s(name), "{ip_addr}");
        assert_eq!(out["source_workload_namespace"], s(ns));
        assert_eq!(out["source_owner"], s(owner));
    }
    let bare = d.produce(&[("source.ip", ip("10.1.1.4"))]);
    assert!(!bare.contains_key("source_labels"), "a pod without labels");
    let job = d.produce(&[("destination.ip", ip("10.1.1.3"))]);
    assert!(
        !job.contains_key("destination_service_name"),
        "no service selects the job's pod"
    );
}

#[test]
fn controllers_in_the_inventory_are_followed() {
    // With the ReplicaSet and Job listed, their own owners are followed: a hand-made
    // ReplicaSet stays the workload, a CronJob's Job leads to the CronJob.
    let mut items = vec![
        pod(
            "web-abc12",
            "default",
            "10.2.0.1",
            json!({"app": "web"}),
            Some(("apps/v1", "ReplicaSet", "web")),
        ),
        pod(
            "nightly-27000000-q1w2e",
            "ops",
            "10.2.0.2",
            json!({}),
            Some(("batch/v1", "Job", "nightly-27000000")),
        ),
        pod(
            "api-7f9c-zz",
            "default",
            "10.2.0.3",
            json!({"pod-template-hash": "7f9c"}),
            Some(("apps/v1", "ReplicaSet", "api-7f9c")),
        ),
    ];
    items.push(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "nightly-27000000", "namespace": "ops", "ownerReferences": [
            {"apiVersion": "batch/v1beta1", "kind": "CronJob", "name": "nightly", "controller": true}]}}));
    items.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "api-7f9c", "namespace": "default", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api-server", "controller": true}]}}));
    let d = Direct::new(json!({ "inventory_file": inventory_file(items) }));
    let owner = |ip_addr: &str| {
        d.produce(&[("source.ip", ip(ip_addr))])["source_owner"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        owner("10.2.0.1"),
        "kubernetes://apis/apps/v1/namespaces/default/replicasets/web"
    );
    assert_eq!(
        owner("10.2.0.2"),
        "kubernetes://apis/batch/v1beta1/namespaces/ops/cronjobs/nightly"
    );
    assert_eq!(
        owner("10.2.0.3"),
        "kubernetes://apis/apps/v1/namespaces/default/deployments/api-server",
        "the listed ReplicaSet's owner wins over the name rule"
    );
}

#[test]
fn unknown_pods_give_no_outputs() {
    let d = bookinfo();
    assert!(
        d.produce(&[
            ("source.uid", s("kubernetes://nope.default")),
            ("destination.ip", ip("192.0.2.1")),
        ])
        .is_empty()
    );
    assert!(d.produce(&[]).is_empty(), "0.0.0.0 and \"\" name no pod");
}

#[test]
fn shared_ips_prefer_live_pods_and_skip_host_network() {
    let mut done = pod("old", "default", "10.3.0.1", json!({}), None);
    done["status"]["phase"] = json!("Succeeded");
    done["metadata"]["creationTimestamp"] = json!("2021-01-01T00:00:00Z");
    let live = pod("new", "default", "10.3.0.1", json!({}), None);
    let mut host = pod("node-agent", "kube-system", "10.128.0.7", json!({}), None);
    host["spec"]["hostNetwork"] = json!(true);
    let d = Direct::new(json!({ "inventory_file": inventory_file(vec![live, done, host]) }));
    assert_eq!(
        d.produce(&[("source.ip", ip("10.3.0.1"))])["source_pod_name"],
        s("new")
    );
    assert!(d.produce(&[("source.ip", ip("10.128.0.7"))]).is_empty());
    assert_eq!(
        d.produce(&[("source.uid", s("kubernetes://node-agent.kube-system"))])["source_pod_name"],
        s("node-agent"),
        "still found by uid"
    );
}

#[test]
fn yaml_inventory_and_cluster_domain() {
    let dir = scratch("yaml");
    let path = dir.join("inventory.yaml");
    std::fs::write(
        &path,
        "pods:\n- metadata: {name: a-0, namespace: shop, labels: {app: cart, version: 1.10}}\n  \
         status: {podIP: 10.9.0.1}\nservices:\n- metadata: {name: cart, namespace: shop}\n  \
         spec: {selector: {app: cart}}\n",
    )
    .unwrap();
    let d =
        Direct::new(json!({ "inventory_file": path, "cluster_domain_name": "svc.corp.example" }));
    let out = d.produce(&[("destination.ip", ip("10.9.0.1"))]);
    assert_eq!(
        out["destination_labels"],
        labels(&[("app", "cart"), ("version", "1.10")])
    );
    assert_eq!(
        out["destination_service_host"],
        s("cart.shop.svc.corp.example")
    );
}

#[test]
fn without_a_source_the_handler_is_inactive() {
    // Istio's default handler params (a commented-out kubeconfig_path): no source.
    let vt = mixer_core::pal::virtual_time::VirtualPlatform::new();
    let snapshot = compile(
        &config(json!({})),
        &registry(),
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    assert!(snapshot.apa.is_empty(), "the stage is left out");
    assert!(
        snapshot
            .warnings
            .iter()
            .any(|w| w.contains("kubernetesenv") && w.contains("no source")),
        "{:?}",
        snapshot.warnings
    );
    let d = bookinfo();
    assert!(d.handler().active());
    assert_eq!(d.snapshot.apa.stages.len(), 1);
}

#[test]
fn bad_params_name_their_field() {
    let vt = mixer_core::pal::virtual_time::VirtualPlatform::new();
    let bad_file = scratch("bad").join("broken.json");
    std::fs::write(&bad_file, "{\"kind\": \"List\", \"items\": [").unwrap();
    for (params, field, words) in [
        (
            json!({"inventory_file": "/nonexistent/inventory.json"}),
            "params.inventory_file",
            "cannot read",
        ),
        (
            json!({"inventory_file": bad_file}),
            "params.inventory_file",
            "invalid JSON",
        ),
        (
            json!({"refresh_interval": "often"}),
            "params.refresh_interval",
            "duration",
        ),
        (
            json!({"kubernetes_api": {"url": "127.0.0.1:8001"}}),
            "params.kubernetes_api.url",
            "http://",
        ),
        (
            json!({"kubernetes_api": {"url": "http://x", "token_file": "/nonexistent/token"}}),
            "params.kubernetes_api.token_file",
            "cannot read",
        ),
        (
            json!({"inventory": "x"}),
            "params.inventory",
            "unknown field",
        ),
    ] {
        let err = compile(
            &config(params.clone()),
            &registry(),
            &vt.platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.field, field, "{params}: {err}");
        assert!(e.message.contains(words), "{params}: {err}");
    }
}

#[test]
fn repeated_and_alternating_lookups_each_get_their_own_pods() {
    // Outputs are declared reusable per inputs and inventory version: repeated inputs give the
    // same outputs, and alternating inputs, two handlers and the same IP in another role each
    // get their own.
    let (a, b) = (bookinfo(), bookinfo());
    let name = |out: &std::collections::BTreeMap<String, mixer_attr::Value<'static>>, k: &str| {
        out.get(k).and_then(|v| v.as_str().map(str::to_string))
    };
    for round in 0..3 {
        for d in [&a, &b] {
            let pp = d.produce(&[("source.ip", ip("10.1.0.10"))]);
            assert_eq!(
                name(&pp, "source_workload_name").as_deref(),
                Some("productpage-v1")
            );
            let same = d.produce(&[("source.ip", ip("10.1.0.10"))]);
            assert_eq!(pp, same, "round {round}");
            let rv = d.produce(&[("source.ip", ip("10.1.0.11"))]);
            assert_eq!(
                name(&rv, "source_workload_name").as_deref(),
                Some("reviews-v1")
            );
            let dest = d.produce(&[("destination.ip", ip("10.1.0.10"))]);
            assert_eq!(name(&dest, "source_workload_name"), None);
            assert_eq!(
                name(&dest, "destination_workload_name").as_deref(),
                Some("productpage-v1")
            );
            let none = d.produce(&[("source.ip", ip("10.9.9.9"))]);
            assert!(none.is_empty(), "{none:?}");
        }
    }
}
