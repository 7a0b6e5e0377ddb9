//! Shared fixtures: a bookinfo-like inventory (kubectl `List` JSON), scratch files, and a
//! `kubernetesenv` handler built from a config on virtual time, asked directly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mixer_attr::{Attributes, Value};
use mixer_core::adapter::{ApaContext, AttributeProducer};
use mixer_core::config_builder::{handler, instance, rule};
use mixer_core::instance::InstanceView;
use mixer_core::pal::Dispatcher;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::{AdapterRegistry, CompileOptions, Config, Snapshot, compile};
use mixer_kubeenv::KubeEnvHandler;
use serde_json::{Value as Json, json};

/// A pod as `kubectl get pods -o json` lists it. `owner`: (apiVersion, kind, name).
pub fn pod(
    name: &str,
    ns: &str,
    ip: &str,
    labels: Json,
    owner: Option<(&str, &str, &str)>,
) -> Json {
    let owners = match owner {
        Some((api, kind, n)) => json!([{"apiVersion": api, "kind": kind, "name": n,
            "controller": true, "blockOwnerDeletion": true, "uid": "0000"}]),
        None => json!([]),
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels,
            "ownerReferences": owners, "creationTimestamp": "2020-01-01T00:00:00Z",
            "resourceVersion": "1"},
        "spec": {"serviceAccountName": format!("{ns}-sa"), "nodeName": "node-1",
            "containers": [
                {"name": "app", "image": "x", "ports": [{"containerPort": 9080, "protocol": "TCP"}]},
                {"name": "istio-proxy", "image": "proxyv2", "ports": [{"containerPort": 15090}]}]},
        "status": {"phase": "Running", "podIP": ip, "hostIP": "10.128.0.7"}
    })
}

/// A service as kubectl lists it.
pub fn service(name: &str, ns: &str, selector: Json) -> Json {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
        "spec": {"selector": selector, "ports": [{"port": 9080}], "clusterIP": "10.0.0.10"}})
}

/// Bookinfo's pods and services plus a StatefulSet, DaemonSet, Job and bare pod.
pub fn bookinfo_items() -> Vec<Json> {
    let rs = |app: &str, v: &str, hash: &str| {
        pod(
            &format!("{app}-{v}-{hash}-x7k2p"),
            "default",
            match (app, v) {
                ("productpage", _) => "10.1.0.10",
                ("reviews", "v1") => "10.1.0.11",
                ("reviews", _) => "10.1.0.12",
                _ => "10.1.0.13",
            },
            json!({"app": app, "version": v, "pod-template-hash": hash}),
            Some(("apps/v1", "ReplicaSet", &format!("{app}-{v}-{hash}"))),
        )
    };
    vec![
        rs("productpage", "v1", "7d9f8b5c6d"),
        rs("reviews", "v1", "5b9f7c8d4"),
        rs("reviews", "v2", "6c8d9f5b7"),
        rs("ratings", "v1", "84c9d8b5f"),
        pod(
            "db-0",
            "data",
            "10.1.1.1",
            json!({"app": "db"}),
            Some(("apps/v1", "StatefulSet", "db")),
        ),
        pod(
            "fluentd-q2w3e",
            "logging",
            "10.1.1.2",
            json!({"app": "fluentd"}),
            Some(("apps/v1", "DaemonSet", "fluentd")),
        ),
        pod(
            "migrate-abcde",
            "data",
            "10.1.1.3",
            json!({"job-name": "migrate"}),
            Some(("batch/v1", "Job", "migrate")),
        ),
        pod("debug", "default", "10.1.1.4", json!({}), None),
        service("productpage", "default", json!({"app": "productpage"})),
        service("reviews", "default", json!({"app": "reviews"})),
        service(
            "reviews-v2",
            "default",
            json!({"app": "reviews", "version": "v2"}),
        ),
        service("ratings", "default", json!({"app": "ratings"})),
        service("db", "data", json!({"app": "db"})),
        service("manual", "default", json!({})),
        // Same selector in another namespace: selects nothing in `default`.
        service("productpage", "other", json!({"app": "productpage"})),
    ]
}

/// `{"kind": "List", "items": [...]}`
pub fn list(items: Vec<Json>) -> Json {
    json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
}

static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// A fresh scratch directory.
pub fn scratch(tag: &str) -> PathBuf {
    let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mixer-kubeenv-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces `path`'s contents at once (write aside, then rename), as config-map volumes do.
pub fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Writes `items` as a kubectl List to a new scratch file.
pub fn inventory_file(items: Vec<Json>) -> PathBuf {
    let path = scratch("inv").join("inventory.json");
    std::fs::write(&path, serde_json::to_string_pretty(&list(items)).unwrap()).unwrap();
    path
}

pub fn registry() -> AdapterRegistry {
    let mut r = mixer_adapters::registry();
    r.register(mixer_kubeenv::adapter());
    r
}

/// Istio's `attributes` instance inputs (with origin too).
pub fn instance_params() -> Json {
    json!({
        "source_uid": "source.uid | \"\"",
        "source_ip": "source.ip | ip(\"0.0.0.0\")",
        "destination_uid": "destination.uid | \"\"",
        "destination_ip": "destination.ip | ip(\"0.0.0.0\")",
        "destination_port": "destination.port | 0",
        "origin_uid": "origin.uid | \"\"",
        "origin_ip": "origin.ip | ip(\"0.0.0.0\")",
    })
}

/// A config with one `kubernetesenv` handler (`params`) and the instance above.
pub fn config(params: Json) -> Config {
    let mut attrs = instance("attributes", "kubernetes", instance_params());
    attrs.attribute_bindings = BTreeMap::from([(
        "source.name".to_string(),
        "$out.source_pod_name | \"unknown\"".to_string(),
    )]);
    Config {
        handlers: vec![handler("kubernetesenv", "kubernetesenv", params)],
        instances: vec![attrs],
        rules: vec![rule(
            "kubeattrgenrulerule",
            "",
            "kubernetesenv",
            &["attributes"],
        )],
        ..Default::default()
    }
}

/// A handler built from `params` on virtual time, asked directly.
pub struct Direct {
    pub vt: VirtualPlatform,
    pub snapshot: Snapshot,
}

impl Direct {
    pub fn new(params: Json) -> Direct {
        let vt = VirtualPlatform::new();
        let snapshot = compile(
            &config(params),
            &registry(),
            &vt.platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Direct { vt, snapshot }
    }

    pub fn handler(&self) -> &KubeEnvHandler {
        self.snapshot
            .handler("kubernetesenv.istio-system")
            .expect("built")
            .handler
            .as_any()
            .and_then(|a| a.downcast_ref::<KubeEnvHandler>())
            .expect("a kubernetesenv handler")
    }

    /// Runs the handler on `inputs` (attribute name -> value); returns every output it gave,
    /// by output name.
    pub fn produce(&self, inputs: &[(&str, Value<'static>)]) -> BTreeMap<String, Value<'static>> {
        let vocab = &self.snapshot.vocabulary;
        let mut bag = Attributes::new();
        for (name, v) in inputs {
            bag.set(vocab.lookup(name).expect(name), v.clone());
        }
        let instance = &self.snapshot.instances[0];
        let mut values = Vec::new();
        instance.evaluate(&bag, &mut (), &mut values).unwrap();
        let view = InstanceView {
            instance,
            values: &values,
        };
        let dispatcher: Arc<dyn Dispatcher> = Arc::new(self.vt.clone());
        let ctx = ApaContext::at(
            &dispatcher,
            mixer_attr::Timestamp::from_unix_nanos(0),
            mixer_core::pal::MonoTime(0),
        );
        let produced = self.handler().produce(&view, &ctx).unwrap();
        assert_eq!(produced.cache_for, None, "lookups are not cached");
        assert!(
            produced.reusable,
            "but reusable for the same inputs and version"
        );
        let outputs = instance.template.outputs;
        outputs
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                produced
                    .output
                    .get(i)
                    .map(|v| (f.path.to_string(), v.into_owned()))
            })
            .collect()
    }
}

pub fn s(v: &str) -> Value<'static> {
    Value::String(v.to_string().into())
}

pub fn ip(v: &str) -> Value<'static> {
    Value::IpAddress(v.parse().unwrap())
}

pub fn labels(pairs: &[(&str, &str)]) -> Value<'static> {
    Value::string_map(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}
