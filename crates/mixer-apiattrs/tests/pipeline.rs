//! An Istio-form config through the pipeline: a `kind: apiattributes` instance whose
//! `attribute_bindings` read `$out.*`, sent to the `apiattributes` handler by a rule; a denier
//! rule matching on the produced `api.operation`, and a stdio access log showing every bound
//! attribute (path and query params through an attribute manifest).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mixer_adapters::stdio::{MemorySink, StdioAdapter};
use mixer_apiattrs::ApiAttributesAdapter;
use mixer_attr::{Attributes, Value, well_known as wk};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::{CheckStart, Code, Pipeline};
use serde_json::json;

const CONFIG: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata:
  name: api-params
spec:
  attributes:
    api.path_params:
      valueType: STRING_MAP
    api.query_params:
      valueType: STRING_MAP
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata:
  name: bookstore
spec:
  compiledAdapter: apiattributes
  params:
    attributes:
      api.service: bookstore.example.com
      api.version: v1
    patterns:
    - attributes: {api.operation: getShelf}
      httpMethod: GET
      uriTemplate: /shelves/{shelf}
    - attributes: {api.operation: deleteShelf}
      httpMethod: DELETE
      uriTemplate: /shelves/{shelf}
    operations:
    - {name: listShelves, method: GET, template: /shelves}
---
apiVersion: config.istio.io/v1alpha2
kind: apiattributes
metadata:
  name: api
spec:
  method: request.method | "GET"
  path: request.path | "/"
  attribute_bindings:
    api.service: $out.api_service | ""
    api.version: $out.api_version | ""
    api.operation: $out.api_operation | ""
    api.protocol: $out.api_protocol | "unknown"
    api.path_params: $out.path_params | emptyStringMap()
    api.query_params: $out.query_params | emptyStringMap()
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: apiattrs
spec:
  actions:
  - handler: bookstore
    instances: [api]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata:
  name: nodelete
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: shelves are not deleted here}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: nothing
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: nodelete
spec:
  match: api.operation == "deleteShelf"
  actions:
  - handler: nodelete
    instances: [nothing]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata:
  name: log
spec:
  compiledAdapter: stdio
  params: {outputAsJson: true}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: access
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    variables:
      service: api.service
      version: api.version
      operation: api.operation
      protocol: api.protocol
      shelf: api.path_params["shelf"] | "-"
      view: api.query_params["view"] | "-"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: log
spec:
  actions:
  - handler: log
    instances: [access]
"#;

fn setup() -> (VirtualPlatform, Pipeline, Arc<MemorySink>) {
    let vt = VirtualPlatform::new();
    let platform = vt.platform();
    let sink = Arc::new(MemorySink::default());
    let mut registry = mixer_adapters::registry();
    registry.register(Arc::new(StdioAdapter::with_sink(sink.clone())));
    registry.register(Arc::new(ApiAttributesAdapter));
    let loaded = mixer_config::load_str("bookstore.yaml", CONFIG).expect("loads");
    let snapshot =
        mixer_config::compile_loaded(&loaded, &registry, &platform, None, &Default::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
    (vt, Pipeline::new(snapshot, platform), sink)
}

fn request(method: &str, path: &str) -> Attributes<'static> {
    Attributes::new()
        .with(wk::REQUEST_METHOD, Value::String(method.to_string().into()))
        .with(wk::REQUEST_PATH, Value::String(path.to_string().into()))
}

#[test]
fn check_denies_on_the_produced_operation() {
    let (vt, p, _) = setup();
    let worker = p.worker(Arc::new(vt.clone()));
    let decide = |method: &str, path: &str| match worker.check(&request(method, path), |_| {}) {
        CheckStart::Done(d) => (d.status.code, d.status.message.clone()),
        CheckStart::Pending(_) => panic!("answered in process"),
    };
    assert_eq!(
        decide("DELETE", "/shelves/7"),
        (
            Code::PERMISSION_DENIED,
            "shelves are not deleted here".into()
        )
    );
    assert_eq!(decide("GET", "/shelves/7").0, Code::OK);
    assert_eq!(decide("GET", "/shelves").0, Code::OK);
    assert_eq!(decide("DELETE", "/unknown/7").0, Code::OK);
    // A trailing slash is ignored.
    assert_eq!(decide("DELETE", "/shelves/8/").0, Code::PERMISSION_DENIED);
}

#[test]
fn report_sees_every_bound_attribute() {
    let (vt, p, sink) = setup();
    let worker = p.worker(Arc::new(vt.clone()));
    worker.report(&request("GET", "/shelves/my%20shelf?view=full&x=1"));
    worker.report(&request("POST", "/nowhere?view=x"));
    worker.report(&Attributes::new());
    p.flush();
    let lines: Vec<serde_json::Value> = sink
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let pick = |l: &serde_json::Value| {
        json!({
            "service": l["service"], "version": l["version"], "operation": l["operation"],
            "protocol": l["protocol"], "shelf": l["shelf"], "view": l["view"],
        })
    };
    assert_eq!(
        pick(&lines[0]),
        json!({"service": "bookstore.example.com", "version": "v1", "operation": "getShelf",
               "protocol": "http", "shelf": "my shelf", "view": "full"})
    );
    // No template matched: the operation takes its default, the maps are empty.
    assert_eq!(
        pick(&lines[1]),
        json!({"service": "bookstore.example.com", "version": "v1", "operation": "",
               "protocol": "http", "shelf": "-", "view": "-"})
    );
    // No method or path: the instance's defaults (GET /) match nothing either.
    assert_eq!(lines[2]["operation"], json!(""));
}

#[test]
fn bad_params_are_config_errors_with_the_field_and_line() {
    let bad = CONFIG.replace(
        "uriTemplate: /shelves/{shelf}\n",
        "uriTemplate: /shelves/{shelf}:x\n",
    );
    let vt = VirtualPlatform::new();
    let mut registry = mixer_adapters::registry();
    registry.register(Arc::new(ApiAttributesAdapter));
    let loaded = mixer_config::load_str("bookstore.yaml", &bad).expect("loads");
    let errors = mixer_config::compile_loaded(
        &loaded,
        &registry,
        &vt.platform(),
        None,
        &Default::default(),
    )
    .unwrap_err();
    let e = &errors[0];
    assert_eq!(e.object, "handler/istio-system/bookstore");
    assert_eq!(e.field, "params.patterns[0].uriTemplate");
    assert!(
        e.message.contains("`:verb` suffixes are not supported"),
        "{e}"
    );
    let (file, line, _) = e.location.clone().expect("located");
    assert_eq!(file, "bookstore.yaml");
    let want = bad.lines().position(|l| l.contains("{shelf}:x")).unwrap() + 1;
    assert_eq!(line as usize, want, "{e}");
}
