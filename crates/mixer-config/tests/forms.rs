//! The accepted YAML forms map onto the right `mixer.v2` messages, and the protobuf form loads
//! the same config.

use mixer_config::v2;
use mixer_config::{compile_loaded, idle_platform, load_protobuf, load_str};
use mixer_core::CompileOptions;
use mixer_proto::prost::Message as _;

const V2_FIELDS: &str = r#"
kind: handler
metadata: {name: authz, namespace: policy}
spec:
  adapter: denier
  connection: {address: "authz:9000", timeout: 250ms}
  dispatch:
    failurePolicy: FAIL_OPEN
    timeout: 1s
    sampling: {percentage: 50, rateLimit: {maxUnsampledEntries: 10, window: 1m}}
    buffering: {maxBatchEntries: 100, maxDelay: 2s, maxQueueEntries: 1000}
    retry: {maxAttempts: 3, initialBackoff: 10ms, maxBackoff: 1s}
---
kind: instance
metadata: {name: who, namespace: policy}
spec:
  template: authorization
  params:
    subject: {user: source.user | "anonymous"}
---
kind: rule
metadata: {name: r, namespace: policy}
spec:
  match: destination.service.name == "reviews"
  experimental: true
  sampling:
    random: {percentSampled: {numerator: 25, denominator: HUNDRED}}
    rateLimit: {samplingDuration: 5s, maxUnsampledEntries: 3}
  fault: {percentage: 1.5, errorCode: 14, errorMessage: injected, delay: 100ms}
  actions:
  - {handler: authz, instances: [who], name: a1}
  request_header_operations:
  - {name: x-user, values: ['a1.output.user'], operation: append}
  - {name: x-old, operation: REMOVE}
"#;

#[test]
fn v2_fields_and_both_spellings_load() {
    let loaded = load_str("v2.yaml", V2_FIELDS).expect("loads");
    let c = &loaded.config;
    let h = &c.handlers[0];
    assert_eq!(
        (h.name.as_str(), h.namespace.as_str(), h.adapter.as_str()),
        ("authz", "policy", "denier")
    );
    let conn = h.connection.as_ref().expect("connection");
    assert_eq!(conn.address, "authz:9000");
    assert_eq!(
        conn.timeout,
        Some(mixer_proto::prost_types::Duration {
            seconds: 0,
            nanos: 250_000_000
        })
    );
    let d = h.dispatch.as_ref().expect("dispatch");
    assert_eq!(
        d.failure_policy,
        v2::dispatch_controls::FailurePolicy::FailOpen as i32
    );
    assert_eq!(d.sampling.as_ref().map(|s| s.percentage), Some(50.0));
    assert_eq!(
        d.sampling
            .as_ref()
            .and_then(|s| s.rate_limit.as_ref())
            .and_then(|r| r.window)
            .map(|w| w.seconds),
        Some(60)
    );
    assert_eq!(
        d.buffering
            .as_ref()
            .map(|b| (b.max_batch_entries, b.max_queue_entries)),
        Some((100, 1000))
    );
    assert_eq!(d.retry.as_ref().map(|r| r.max_attempts), Some(3));

    let r = &c.rules[0];
    assert!(r.experimental);
    let s = r.sampling.as_ref().expect("sampling");
    assert_eq!(s.percentage, 25.0);
    assert_eq!(
        s.rate_limit
            .as_ref()
            .map(|rl| (rl.max_unsampled_entries, rl.window.map(|w| w.seconds))),
        Some((3, Some(5)))
    );
    let f = r.fault.as_ref().expect("fault");
    assert_eq!(
        (f.percentage, f.error_code, f.error_message.as_str()),
        (1.5, 14, "injected")
    );
    assert_eq!(r.actions[0].name, "a1");
    assert_eq!(r.request_header_operations.len(), 2);
    assert_eq!(
        r.request_header_operations[0].operation,
        v2::rule_header_operation::Operation::Append as i32
    );
    assert_eq!(
        r.request_header_operations[1].operation,
        v2::rule_header_operation::Operation::Remove as i32
    );
    assert_eq!(c.instances[0].template, "authorization");
}

#[test]
fn namespace_defaults_to_istio_system_and_other_kinds_are_noted() {
    let text = "kind: checknothing\nmetadata: {name: n}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\n---\napiVersion: config.istio.io/v1alpha2\nkind: template\nmetadata: {name: metric}\nspec: {descriptor: Cg==}\n---\n---\n";
    let loaded = load_str("mixed.yaml", text).expect("loads");
    assert_eq!(loaded.config.instances[0].namespace, "istio-system");
    assert_eq!(loaded.config.instances[0].template, "checknothing");
    assert_eq!(loaded.notes.len(), 2, "{:?}", loaded.notes);
    assert_eq!(
        loaded.notes[0],
        "mixed.yaml:4:1: skipped Service default/s (v1): not Mixer config"
    );
    assert!(
        loaded.notes[1].starts_with(
            "mixed.yaml:8:1: template descriptor istio-system/metric accepted and skipped"
        ),
        "{}",
        loaded.notes[1]
    );
}

#[test]
fn per_template_kind_takes_attribute_bindings_out_of_the_params() {
    let text = "kind: kubernetes\nmetadata: {name: attrs}\nspec:\n  source_uid: source.uid | \"\"\n  attribute_bindings:\n    source.name: $out.source_pod_name | \"unknown\"\n";
    let loaded = load_str("k.yaml", text).expect("loads");
    let i = &loaded.config.instances[0];
    assert_eq!(i.attribute_bindings.len(), 1);
    let params = i.params.as_ref().expect("params");
    assert_eq!(params.fields.keys().collect::<Vec<_>>(), ["source_uid"]);
}

#[test]
fn merge_keys_and_anchors_work_in_config() {
    let text = "kind: handler\nmetadata: {name: a}\nspec: &common\n  compiledAdapter: denier\n  params: {status: {code: 7}}\n---\nkind: handler\nmetadata: {name: b}\nspec:\n  <<: {compiledAdapter: denier}\n  params: {status: {code: 16}}\n";
    let loaded = load_str("m.yaml", text).expect("loads");
    let codes: Vec<_> = loaded
        .config
        .handlers
        .iter()
        .map(|h| mixer_core::snapshot::struct_to_json(h.params.as_ref().expect("params"))["status"]["code"].clone())
        .collect();
    assert_eq!(codes, [serde_json::json!(7), serde_json::json!(16)]);
}

#[test]
fn protobuf_form_loads_the_same_config_and_compiles() {
    let yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/istio-configs/testdata-deny.yaml"),
    )
    .expect("read");
    let from_yaml = load_str("deny.yaml", &yaml).expect("loads");
    let bytes = from_yaml.config.encode_to_vec();
    let from_pb = load_protobuf("deny.pb", &bytes).expect("decodes");
    assert_eq!(from_pb.config, from_yaml.config);
    assert_eq!(
        from_pb
            .source_map
            .file_of("rule/istio-system/mixerdenysome"),
        Some("deny.pb")
    );
    let registry = mixer_adapters::registry();
    let snapshot = compile_loaded(
        &from_pb,
        &registry,
        &idle_platform(),
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    assert_eq!(snapshot.rules.len(), 1);

    // Errors of protobuf input have no line, but still name object and field.
    let mut broken = from_yaml.config.clone();
    broken.rules[0].r#match = "request.headers[".into();
    let loaded = load_protobuf("broken.pb", &broken.encode_to_vec()).expect("decodes");
    let errors = compile_loaded(
        &loaded,
        &registry,
        &idle_platform(),
        None,
        &CompileOptions::default(),
    )
    .expect_err("bad match");
    assert_eq!(
        (errors[0].object.as_str(), errors[0].field.as_str()),
        ("rule/istio-system/mixerdenysome", "match")
    );
    assert_eq!(errors[0].location, None);
}

#[test]
fn several_sources_combine_and_clash() {
    let mut loader = mixer_config::Loader::default();
    loader.add_str("a.yaml", "kind: rule\nmetadata: {name: r}\n");
    loader.add_str(
        "b.yaml",
        "kind: rule\nmetadata: {name: r, namespace: other}\n---\nkind: rule\nmetadata: {name: r}\n",
    );
    let errors = loader
        .finish()
        .expect_err("r is defined twice in istio-system")
        .0;
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "b.yaml:5:18: rule/istio-system/r: field `name`: duplicate rule name (first defined at a.yaml:2:18)"
    );
}

#[test]
fn source_map_positions_fall_back_to_enclosing_fields_and_the_document() {
    let text =
        "kind: rule\nmetadata:\n  name: r\nspec:\n  actions:\n  - handler: h\n    instances: [i]\n";
    let loaded = load_str("p.yaml", text).expect("loads");
    let map = &loaded.source_map;
    assert_eq!(
        map.position("rule/istio-system/r", "actions[0].handler"),
        Some(("p.yaml".into(), 6, 14))
    );
    assert_eq!(
        map.position("rule/istio-system/r", "actions[0].instances[0]"),
        Some(("p.yaml".into(), 7, 17))
    );
    assert_eq!(
        map.position("rule/istio-system/r", "actions[0].name"),
        Some(("p.yaml".into(), 6, 5))
    );
    assert_eq!(
        map.position("rule/istio-system/r", "match"),
        Some(("p.yaml".into(), 1, 1))
    );
    assert_eq!(map.position("rule/istio-system/nope", "match"), None);
}
