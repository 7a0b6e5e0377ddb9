//! Istio 1.4's default Mixer config (`attributes` instance, `kubeattrgenrulerule`, stdio access
//! log) with the `kubernetesenv` handler given an inventory file: checks denied by a produced
//! `source.labels["app"]`, access-log lines carrying produced `source.*` / `destination.*`,
//! Istio's defaults for unknown pods, and ingested attributes kept when the handler has no
//! source (the config as shipped).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use mixer_adapters::stdio::{MemorySink, StdioAdapter};
use mixer_attr::{Attributes, Timestamp, Value};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{CheckStart, Code, CompileOptions, Pipeline};
use serde_json::{Value as Json, json};

fn istio_default() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/istio-configs/istio-1.4-default-mixer-config.yaml")
}

/// A deny rule on a produced attribute, added to the default config.
const DENY_RATINGS: &str = r#"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyratings, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: ratings may not call productpage}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: denyratings, namespace: istio-system}
spec:
  match: source.labels["app"] == "ratings" && destination.workload.name == "productpage-v1"
  actions:
  - handler: denyratings
    instances: [denyrequest]
"#;

struct Setup {
    vt: VirtualPlatform,
    pipeline: Pipeline,
    log: Arc<MemorySink>,
}

/// The default config plus [`DENY_RATINGS`]; the kubernetesenv handler reads `inventory`.
fn setup(inventory: Option<&Path>) -> Setup {
    let text = std::fs::read_to_string(istio_default())
        .expect("shared/istio-configs beside the repo")
        + DENY_RATINGS;
    let mut loaded = mixer_config::load_str("istio-1.4-default-mixer-config.yaml", &text)
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(path) = inventory {
        let h = loaded
            .config
            .handlers
            .iter_mut()
            .find(|h| h.name == "kubernetesenv")
            .expect("the default config has a kubernetesenv handler");
        h.params = Some(json_to_struct(&json!({ "inventory_file": path })));
    }
    let log = Arc::new(MemorySink::default());
    let mut registry = registry();
    registry.register(Arc::new(StdioAdapter::with_sink(log.clone())));
    let vt = VirtualPlatform::new();
    let snapshot = mixer_config::compile_loaded(
        &loaded,
        &registry,
        &vt.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let pipeline = Pipeline::new(snapshot, vt.platform());
    Setup { vt, pipeline, log }
}

impl Setup {
    fn bag(&self, attrs: &[(&str, Value<'static>)]) -> Attributes<'static> {
        let snapshot = self.pipeline.snapshot();
        let mut bag = Attributes::new();
        let t = Timestamp::parse_rfc3339("2020-01-01T00:00:00Z").unwrap();
        let common = [
            ("context.protocol", s("http")),
            ("context.reporter.kind", s("inbound")),
            ("request.time", Value::Timestamp(t)),
            ("response.time", Value::Timestamp(t)),
            ("request.method", s("GET")),
            ("response.code", Value::Int64(200)),
            ("destination.port", Value::Int64(9080)),
        ];
        for (name, v) in common.iter().chain(attrs) {
            bag.set(snapshot.vocabulary.lookup(name).expect(name), v.clone());
        }
        bag
    }

    fn check(&self, attrs: &[(&str, Value<'static>)]) -> (Code, String) {
        let bag = self.bag(attrs);
        match self
            .pipeline
            .worker(Arc::new(self.vt.clone()))
            .check(&bag, |_| {})
        {
            CheckStart::Done(a) => (a.status.code, a.status.message.clone()),
            CheckStart::Pending(_) => panic!("answered in process"),
        }
    }

    /// Reports one request and returns its access-log line.
    fn access_log(&self, attrs: &[(&str, Value<'static>)]) -> Json {
        let before = self.log.lines().len();
        let bag = self.bag(attrs);
        self.pipeline.worker(Arc::new(self.vt.clone())).report(&bag);
        self.pipeline.flush();
        let lines = self.log.lines();
        let line = lines[before..]
            .iter()
            .find(|l| l.contains("sourceWorkload"))
            .unwrap_or_else(|| panic!("no access log line in {lines:?}"));
        serde_json::from_str(line).unwrap()
    }
}

fn uid(pod: &str) -> Value<'static> {
    s(&format!("kubernetes://{pod}.default"))
}

const PRODUCTPAGE: &str = "productpage-v1-7d9f8b5c6d-x7k2p";
const REVIEWS_V2: &str = "reviews-v2-6c8d9f5b7-x7k2p";
const RATINGS: &str = "ratings-v1-84c9d8b5f-x7k2p";

#[test]
fn checks_deny_on_produced_labels() {
    let path = inventory_file(bookinfo_items());
    let st = setup(Some(&path));
    assert_eq!(st.pipeline.snapshot().apa.stages.len(), 1);
    assert_eq!(
        st.check(&[
            ("source.uid", uid(RATINGS)),
            ("destination.uid", uid(PRODUCTPAGE))
        ]),
        (
            Code::PERMISSION_DENIED,
            "ratings may not call productpage".to_string()
        )
    );
    // The source by IP too (the default instance sends `source.ip`, not `destination.ip`).
    assert_eq!(
        st.check(&[
            ("source.ip", ip("10.1.0.13")),
            ("destination.uid", uid(PRODUCTPAGE))
        ])
        .0,
        Code::PERMISSION_DENIED
    );
    assert_eq!(
        st.check(&[
            ("source.ip", ip("10.1.0.13")),
            ("destination.ip", ip("10.1.0.10"))
        ])
        .0,
        Code::OK,
        "no destination_ip input in Istio's instance: the destination stays unknown"
    );
    assert_eq!(
        st.check(&[
            ("source.uid", uid(REVIEWS_V2)),
            ("destination.uid", uid(PRODUCTPAGE))
        ])
        .0,
        Code::OK
    );
    // An ingested label is overwritten by the inventory's (the pod's labels win).
    assert_eq!(
        st.check(&[
            ("source.uid", uid(REVIEWS_V2)),
            ("source.labels", labels(&[("app", "ratings")])),
            ("destination.uid", uid(PRODUCTPAGE))
        ])
        .0,
        Code::OK
    );
}

#[test]
fn reports_carry_produced_identity() {
    let path = inventory_file(bookinfo_items());
    let st = setup(Some(&path));
    let line = st.access_log(&[
        ("source.uid", uid(PRODUCTPAGE)),
        ("destination.uid", uid(REVIEWS_V2)),
    ]);
    let expect = [
        ("sourceApp", "productpage"),
        ("sourceName", PRODUCTPAGE),
        ("sourceWorkload", "productpage-v1"),
        ("sourceNamespace", "default"),
        (
            "sourceOwner",
            "kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1",
        ),
        ("sourceIp", "10.1.0.10"),
        ("destinationApp", "reviews"),
        ("destinationName", REVIEWS_V2),
        ("destinationWorkload", "reviews-v2"),
        ("destinationNamespace", "default"),
        (
            "destinationOwner",
            "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v2",
        ),
        ("destinationIp", "10.1.0.12"),
    ];
    for (k, v) in expect {
        assert_eq!(line[k], json!(v), "{k} in {line}");
    }
}

#[test]
fn unknown_pods_take_istio_defaults() {
    let path = inventory_file(bookinfo_items());
    let st = setup(Some(&path));
    let line = st.access_log(&[
        ("source.uid", s("kubernetes://gone-1234.default")),
        ("source.workload.name", s("ingested")),
    ]);
    // The bindings' defaults apply: the stage owns these attributes.
    assert_eq!(line["sourceWorkload"], json!("unknown"), "{line}");
    assert_eq!(line["sourceOwner"], json!("unknown"));
    assert_eq!(line["sourceName"], json!("unknown"));
    assert_eq!(line["sourceNamespace"], json!("default"));
    assert_eq!(line["sourceApp"], json!(""));
    assert_eq!(line["destinationWorkload"], json!("unknown"));
    assert_eq!(
        st.check(&[("source.uid", s("kubernetes://gone-1234.default"))])
            .0,
        Code::OK
    );
}

#[test]
fn the_config_as_shipped_keeps_ingested_attributes() {
    let st = setup(None);
    let snapshot = st.pipeline.snapshot();
    assert!(snapshot.apa.is_empty());
    assert!(
        snapshot
            .warnings
            .iter()
            .any(|w| w.contains("kubernetesenv")),
        "{:?}",
        snapshot.warnings
    );
    let line = st.access_log(&[
        ("source.workload.name", s("productpage-v1")),
        ("source.labels", labels(&[("app", "productpage")])),
    ]);
    assert_eq!(line["sourceWorkload"], json!("productpage-v1"));
    assert_eq!(line["sourceApp"], json!("productpage"));
}
