//! Rejected configs: each error names the object, the field and the line (and column) of the
//! YAML, and the running config stays in force (a snapshot is swapped in only on success).

use std::sync::Arc;

use mixer_attr::{Attributes, Value, well_known as wk};
use mixer_config::{Limits, Loader, compile_loaded, idle_platform, load_str};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::{CheckStart, Code, CompileOptions, ConfigError, Pipeline};

const FILE: &str = "policy.yaml";

/// A valid config: a manifest, a denier handler, two instances and a rule denying `reviews`.
const GOOD: &str = r#"apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata:
  name: extra
spec:
  attributes:
    custom.flag:
      valueType: BOOL
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata:
  name: denyall
spec:
  compiledAdapter: denier
  params:
    status:
      code: 7
      message: Not allowed
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: nothing
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: accesslog
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    variables:
      code: response.code | 200
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: deny-reviews
spec:
  match: destination.service.name == "reviews"
  actions:
  - handler: denyall
    instances: [nothing]
"#;

/// The good config with `from` replaced by `to` (which must occur exactly once).
fn with(from: &str, to: &str) -> String {
    assert_eq!(
        GOOD.matches(from).count(),
        1,
        "`{from}` must occur once in GOOD"
    );
    GOOD.replace(from, to)
}

/// The good config plus more documents.
fn plus(extra: &str) -> String {
    format!("{GOOD}---\n{extra}")
}

/// 1-based line and column of the first occurrence of `needle` in `text`.
fn pos_of(text: &str, needle: &str) -> (u32, u32) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the text"));
    let line = text[..at].matches('\n').count() + 1;
    let col = text[..at].rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    (line as u32, col as u32)
}

struct Live {
    pipeline: Pipeline,
    vt: VirtualPlatform,
}

impl Live {
    fn new() -> Live {
        let loaded = load_str(FILE, GOOD).expect("the good config loads");
        let vt = VirtualPlatform::new();
        let platform = mixer_core::pal::Platform::on(Arc::new(vt.clone()), Arc::new(vt.clone()));
        let snapshot = compile_loaded(
            &loaded,
            &mixer_adapters::registry(),
            &platform,
            None,
            &Default::default(),
        )
        .expect("the good config compiles");
        Live {
            pipeline: Pipeline::new(snapshot, platform),
            vt,
        }
    }

    /// Loads and compiles `text`; swaps it in only when it is valid.
    fn apply(&self, text: &str) -> Result<(), Vec<ConfigError>> {
        let loaded = load_str(FILE, text).map_err(|e| e.0)?;
        let current = self.pipeline.snapshot();
        let next = compile_loaded(
            &loaded,
            &mixer_adapters::registry(),
            self.pipeline.platform(),
            Some(&current),
            &CompileOptions::default(),
        )?;
        self.pipeline.swap(next);
        Ok(())
    }

    /// The live config still denies `reviews` and allows `ratings`.
    fn still_answers(&self) {
        let worker = self.pipeline.worker(Arc::new(self.vt.clone()));
        for (service, denied) in [("reviews", true), ("ratings", false)] {
            let bag = Attributes::new().with(
                wk::DESTINATION_SERVICE_NAME,
                Value::String(service.to_string().into()),
            );
            let CheckStart::Done(answer) = worker.check(&bag, |_| {}) else {
                panic!("the denier answers inline")
            };
            if denied {
                assert_eq!(answer.status.code, Code::PERMISSION_DENIED, "{service}");
            } else {
                assert!(answer.is_allowed(), "{service}");
            }
        }
        assert_eq!(self.pipeline.snapshot().rules.len(), 1);
    }
}

/// What a rejection must say.
struct Expect<'a> {
    object: &'a str,
    field: &'a str,
    /// Line and column in the file.
    at: (u32, u32),
    message: &'a str,
}

/// Applies `text` to a live pipeline, expects exactly one error as described, and checks the
/// previous snapshot is untouched.
fn reject(text: &str, want: Expect<'_>) {
    let live = Live::new();
    let before = live.pipeline.snapshot();
    let errors = live.apply(text).expect_err("the config must be rejected");
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors.len(),
        1,
        "expected one error, got:\n{}",
        shown.join("\n")
    );
    let e = &errors[0];
    assert_eq!(e.object, want.object, "{e}");
    assert_eq!(e.field, want.field, "{e}");
    assert!(
        e.message.contains(want.message),
        "message of `{e}` lacks `{}`",
        want.message
    );
    assert_eq!(
        e.location,
        Some((FILE.to_string(), want.at.0, want.at.1)),
        "{e}"
    );
    // The display form the CLI prints.
    let prefix = format!("{FILE}:{}:{}: {}: ", want.at.0, want.at.1, want.object);
    assert!(e.to_string().starts_with(&prefix), "{e}");
    assert!(
        Arc::ptr_eq(&before, &live.pipeline.snapshot()),
        "the live snapshot was replaced"
    );
    live.still_answers();
}

#[test]
fn the_good_config_swaps_in_and_a_changed_one_too() {
    let live = Live::new();
    live.still_answers();
    let changed = with(r#"== "reviews""#, r#"== "details""#);
    live.apply(&changed).expect("valid");
    let after = live.pipeline.snapshot();
    assert_eq!(
        after.rules[0].predicate.as_ref().map(|p| p.source()),
        Some(r#"destination.service.name == "details""#)
    );
}

#[test]
fn unknown_handler_reference() {
    let text = with("- handler: denyall", "- handler: nosuch");
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "actions[0].handler",
            at: pos_of(&text, "nosuch"),
            message: "no handler `nosuch` (known: denyall.istio-system)",
        },
    );
}

#[test]
fn unknown_instance_reference() {
    let text = with("instances: [nothing]", "instances: [nothing, nosuch]");
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "actions[0].instances[1]",
            at: pos_of(&text, "nosuch"),
            message: "no instance `nosuch`",
        },
    );
}

#[test]
fn unknown_template() {
    let text = with(
        "compiledTemplate: checknothing",
        "compiledTemplate: checksomething",
    );
    let live = Live::new();
    let errors = live.apply(&text).expect_err("rejected");
    let e = &errors[0];
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        ("instance/istio-system/nothing", "template")
    );
    assert!(
        e.message
            .starts_with("unknown template `checksomething` (known: checknothing, "),
        "{e}"
    );
    let (l, c) = pos_of(&text, "checksomething");
    assert_eq!(e.location, Some((FILE.to_string(), l, c)));
    // mixer-core does not register an instance whose template is unknown, so the rule that
    // refers to it gets a follow-on error (reported to the lead; tolerated here).
    for follow_on in &errors[1..] {
        assert_eq!(follow_on.field, "actions[0].instances[0]", "{follow_on}");
        assert!(
            follow_on.message.starts_with("no instance `nothing`"),
            "{follow_on}"
        );
    }
    assert!(errors.len() <= 2);
    live.still_answers();
}

#[test]
fn unknown_adapter() {
    let text = with("compiledAdapter: denier", "compiledAdapter: nosuchadapter");
    reject(
        &text,
        Expect {
            object: "handler/istio-system/denyall",
            field: "adapter",
            at: pos_of(&text, "nosuchadapter"),
            message: "adapter `nosuchadapter` is not in this build (available: ",
        },
    );
}

#[test]
fn adapter_skipped_with_the_option_but_the_rule_then_loses_its_action() {
    let text = with("compiledAdapter: denier", "compiledAdapter: nosuchadapter");
    let loaded = load_str(FILE, &text).expect("loads");
    let options = CompileOptions {
        skip_unknown_adapters: true,
        ..Default::default()
    };
    let snapshot = compile_loaded(
        &loaded,
        &mixer_adapters::registry(),
        &idle_platform(),
        None,
        &options,
    )
    .expect("compiles with the handler skipped");
    assert!(snapshot.rules[0].check_actions.is_empty());
    assert!(
        snapshot
            .warnings
            .iter()
            .any(|w| w.contains("adapter `nosuchadapter` is not in this build"))
    );
}

#[test]
fn bad_match_syntax_points_into_the_expression() {
    let text = with(
        r#"match: destination.service.name == "reviews""#,
        r#"match: destination.service.name == "reviews" && (source.ip =="#,
    );
    let live = Live::new();
    let errors = live.apply(&text).expect_err("rejected");
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        ("rule/istio-system/deny-reviews", "match")
    );
    assert!(
        e.message
            .starts_with("expression `destination.service.name"),
        "{e}"
    );
    let (file, line, col) = e.location.clone().expect("located");
    let (value_line, value_col) = pos_of(&text, "destination.service.name == \"reviews\" &&");
    assert_eq!((file.as_str(), line), (FILE, value_line));
    // The column is inside the expression, past its start (where the syntax error is).
    let len = r#"destination.service.name == "reviews" && (source.ip =="#.len() as u32;
    assert!(col > value_col + 20 && col <= value_col + len + 1, "{e}");
    live.still_answers();
}

#[test]
fn unknown_attribute_in_match_points_at_the_attribute() {
    let text = with(
        r#"match: destination.service.name == "reviews""#,
        r#"match: destination.service.name == "reviews" && bogus.attr == "x""#,
    );
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "match",
            at: pos_of(&text, "bogus.attr"),
            message: "bogus.attr",
        },
    );
}

#[test]
fn match_that_is_not_bool() {
    let text = with(
        r#"match: destination.service.name == "reviews""#,
        "match: destination.service.name",
    );
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "match",
            at: pos_of(&text, "destination.service.name\n"),
            message: "is STRING, not BOOL",
        },
    );
}

#[test]
fn unknown_attribute_in_an_instance_field() {
    let text = with("code: response.code | 200", "code: response.codes | 200");
    reject(
        &text,
        Expect {
            object: "instance/istio-system/accesslog",
            field: "params.variables.code",
            at: pos_of(&text, "response.codes"),
            message: "response.codes",
        },
    );
}

#[test]
fn instance_field_type_mismatch() {
    let text = with(
        "severity: '\"Info\"'",
        "severity: '\"Info\"'\n    timestamp: response.code",
    );
    reject(
        &text,
        Expect {
            object: "instance/istio-system/accesslog",
            field: "params.timestamp",
            at: pos_of(&text, "response.code\n"),
            message: "expression `response.code` is INT64 but the field is TIMESTAMP",
        },
    );
}

#[test]
fn unknown_template_field() {
    let text = with(
        "severity: '\"Info\"'",
        "severity: '\"Info\"'\n    sevrity: '\"Warning\"'",
    );
    reject(
        &text,
        Expect {
            object: "instance/istio-system/accesslog",
            field: "params.sevrity",
            at: pos_of(&text, "'\"Warning\"'"),
            message: "template `logentry` has no field `sevrity`",
        },
    );
}

#[test]
fn duplicate_names() {
    let text = plus(
        "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata:\n  name: denyall\nspec:\n  compiledAdapter: denier\n",
    );
    let second = text.rfind("name: denyall").expect("second") + "name: ".len();
    let line = text[..second].matches('\n').count() as u32 + 1;
    reject(
        &text,
        Expect {
            object: "handler/istio-system/denyall",
            field: "name",
            at: (line, 9),
            message: "duplicate handler name (first defined at policy.yaml:13:9)",
        },
    );
}

#[test]
fn duplicate_names_across_kind_spellings() {
    // `kind: checknothing` is an instance too: it collides with `kind: instance` of that name.
    let text = plus(
        "apiVersion: config.istio.io/v1alpha2\nkind: checknothing\nmetadata:\n  name: nothing\n",
    );
    let line = text[..text.rfind("name: nothing").expect("second")]
        .matches('\n')
        .count() as u32
        + 1;
    reject(
        &text,
        Expect {
            object: "instance/istio-system/nothing",
            field: "name",
            at: (line, 9),
            message: "duplicate instance name (first defined at policy.yaml:24:9)",
        },
    );
}

#[test]
fn bad_value_type_in_a_manifest() {
    let text = with("valueType: BOOL", "valueType: BOOLEAN");
    reject(
        &text,
        Expect {
            object: "attributemanifest/istio-system/extra",
            field: "attributes.custom.flag.valueType",
            at: pos_of(&text, "BOOLEAN"),
            message: "unknown value type `BOOLEAN` (one of: STRING, INT64",
        },
    );
}

#[test]
fn manifest_conflicting_with_a_built_in_attribute() {
    let text = with(
        "    custom.flag:\n      valueType: BOOL",
        "    source.ip:\n      valueType: STRING",
    );
    reject(
        &text,
        Expect {
            object: "attributemanifest/istio-system/extra",
            field: "attributes.source.ip",
            at: pos_of(&text, "source.ip:"),
            message: "attribute `source.ip` is declared as STRING but is already IP_ADDRESS",
        },
    );
}

#[test]
fn manifest_attribute_without_a_type() {
    let text = with("      valueType: BOOL", "      description: a flag");
    reject(
        &text,
        Expect {
            object: "attributemanifest/istio-system/extra",
            field: "attributes.custom.flag.valueType",
            at: pos_of(&text, "custom.flag:"),
            message: "missing or unknown value type",
        },
    );
}

#[test]
fn yaml_syntax_error() {
    let text = with("message: Not allowed", "message: \"Not allowed");
    let live = Live::new();
    let errors = live.apply(&text).expect_err("rejected");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.object, "document 2");
    assert!(e.message.starts_with("invalid YAML: "), "{e}");
    let (_, line, _) = e.location.clone().expect("located");
    assert!(line >= pos_of(&text, "\"Not allowed").0, "{e}");
    live.still_answers();
}

#[test]
fn yaml_bad_indentation() {
    let text = with(
        "  compiledAdapter: denier",
        "  compiledAdapter: denier\n   params2: x",
    );
    reject(
        &text,
        Expect {
            object: "document 2",
            field: "",
            at: pos_of(&text, "params2")
                .0
                .checked_add(0)
                .map(|l| (l, 11))
                .expect("line"),
            message: "invalid YAML: mapping values are not allowed in this context",
        },
    );
}

#[test]
fn match_that_is_not_a_string() {
    let text = with(
        r#"match: destination.service.name == "reviews""#,
        "match: [a, b]",
    );
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "match",
            at: pos_of(&text, "[a, b]"),
            message: "`match` must be a string, not a list",
        },
    );
}

#[test]
fn actions_that_are_not_a_list() {
    let text = with(
        "  - handler: denyall\n    instances: [nothing]",
        "    handler: denyall\n    instances: [nothing]",
    );
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "actions",
            at: pos_of(&text, "handler: denyall"),
            message: "`actions` must be a list, not a mapping",
        },
    );
}

#[test]
fn missing_metadata_name() {
    let text = with(
        "metadata:\n  name: deny-reviews\n",
        "metadata:\n  labels: {app: x}\n",
    );
    reject(
        &text,
        Expect {
            object: "document 5",
            field: "metadata.name",
            at: pos_of(&text, "labels: {app: x}"),
            message: "a `rule` needs `metadata.name`",
        },
    );
}

#[test]
fn missing_kind() {
    let text = with("kind: rule\n", "");
    let doc = text.rfind("apiVersion").expect("doc");
    let line = text[..doc].matches('\n').count() as u32 + 1;
    reject(
        &text,
        Expect {
            object: "document 5",
            field: "kind",
            at: (line, 1),
            message: "missing `kind`",
        },
    );
}

#[test]
fn document_too_deep() {
    let mut nested = String::from("x");
    for _ in 0..100 {
        nested = format!("[{nested}]");
    }
    let text = with(
        "severity: '\"Info\"'",
        &format!("severity: '\"Info\"'\n    deep: {nested}"),
    );
    let (line, col) = pos_of(&text, "[[[[");
    reject(
        &text,
        Expect {
            object: "document 4",
            field: "",
            // The 62nd `[` is the 65th level (the document, `spec` and `params` are three).
            at: (line, col + 61),
            message: "nested deeper than 64 levels",
        },
    );
}

#[test]
fn file_too_large() {
    let text = format!("{GOOD}# {}\n", "x".repeat(4 << 20));
    let live = Live::new();
    let errors = live.apply(&text).expect_err("rejected");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].object, FILE);
    assert!(
        errors[0]
            .message
            .contains("is over the limit of 4194304 bytes"),
        "{}",
        errors[0]
    );
    assert_eq!(
        errors[0].to_string(),
        format!("{FILE}: {}", errors[0].message)
    );
    live.still_answers();
}

#[test]
fn alias_bomb() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let text = plus(&format!(
        "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata:\n  name: bomb\nspec:\n  compiledAdapter: denier\n  params:\n{}",
        bomb.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    ));
    let live = Live::new();
    let started = std::time::Instant::now();
    let errors = live.apply(&text).expect_err("rejected");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].object, "document 6");
    assert!(
        errors[0]
            .message
            .starts_with("too many YAML nodes (over 500000"),
        "{}",
        errors[0]
    );
    let (_, line, _) = errors[0].location.clone().expect("located");
    assert!(line > pos_of(&text, "a0: &a0").0, "{}", errors[0]);
    live.still_answers();
}

#[test]
fn list_in_instance_params() {
    let text = with("code: response.code | 200", "code: [response.code, 200]");
    reject(
        &text,
        Expect {
            object: "instance/istio-system/accesslog",
            field: "params.variables.code",
            at: pos_of(&text, "[response.code, 200]"),
            message: "lists are not valid instance params",
        },
    );
}

#[test]
fn bad_header_operation() {
    let text = with(
        "    instances: [nothing]\n",
        "    instances: [nothing]\n  responseHeaderOperations:\n  - name: x-denied\n    values: ['\"yes\"']\n    operation: UPSERT\n",
    );
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "responseHeaderOperations[0].operation",
            at: pos_of(&text, "UPSERT"),
            message: "unknown header operation `UPSERT` (REPLACE, REMOVE or APPEND)",
        },
    );
}

#[test]
fn bad_header_value_expression() {
    let text = with(
        "    instances: [nothing]\n",
        "    instances: [nothing]\n  request_header_operations:\n  - name: x-user\n    values: [source.usr]\n",
    );
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "requestHeaderOperations[0].values[0]",
            at: pos_of(&text, "source.usr"),
            message: "source.usr",
        },
    );
}

#[test]
fn empty_instances_list_in_an_action() {
    let text = with("instances: [nothing]", "instances: []");
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "actions[0].instances",
            at: pos_of(&text, "[]"),
            message: "an action needs at least one instance",
        },
    );
}

#[test]
fn action_without_a_handler() {
    let text = with(
        "  - handler: denyall\n    instances: [nothing]",
        "  - instances: [nothing]",
    );
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "actions[0].handler",
            at: pos_of(&text, "instances: [nothing]"),
            message: "an action needs a `handler`",
        },
    );
}

#[test]
fn adapter_rejects_its_params() {
    let text = with(
        "      message: Not allowed",
        "      message: Not allowed\n    validDuration: soon",
    );
    reject(
        &text,
        Expect {
            object: "handler/istio-system/denyall",
            field: "params.validDuration",
            at: pos_of(&text, "soon"),
            message: "soon",
        },
    );
}

#[test]
fn adapter_does_not_accept_the_template() {
    let text = with("instances: [nothing]", "instances: [accesslog]");
    reject(
        &text,
        Expect {
            object: "rule/istio-system/deny-reviews",
            field: "actions[0].instances[0]",
            at: pos_of(&text, "accesslog]"),
            message: "adapter `denier` of handler `denyall` does not accept template `logentry`",
        },
    );
}

#[test]
fn compiled_adapter_and_adapter_disagree() {
    let text = with(
        "compiledAdapter: denier",
        "compiledAdapter: denier\n  adapter: stdio",
    );
    reject(
        &text,
        Expect {
            object: "handler/istio-system/denyall",
            field: "adapter",
            at: pos_of(&text, "stdio"),
            message: "`compiledAdapter: denier` and `adapter: stdio` disagree",
        },
    );
}

#[test]
fn unknown_spec_field() {
    let text = with("  params:\n    status:", "  parms:\n    status:");
    reject(
        &text,
        Expect {
            object: "handler/istio-system/denyall",
            field: "parms",
            at: pos_of(&text, "parms"),
            message: "unknown field `parms` (expected one of: compiledAdapter, adapter, params, connection, dispatch)",
        },
    );
}

#[test]
fn duplicate_yaml_key() {
    let text = with("      code: 7\n", "      code: 7\n      code: 8\n");
    reject(
        &text,
        Expect {
            object: "document 2",
            field: "",
            at: pos_of(&text, "code: 8"),
            message: "duplicate key `code` (first at line 18)",
        },
    );
}

#[test]
fn bad_connection_timeout() {
    let text = with(
        "  compiledAdapter: denier\n",
        "  compiledAdapter: denier\n  connection:\n    address: backend:9000\n    timeout: 5\n",
    );
    reject(
        &text,
        Expect {
            object: "handler/istio-system/denyall",
            field: "connection.timeout",
            at: pos_of(&text, "5\n"),
            message: "`5` is not a duration",
        },
    );
}

#[test]
fn document_that_is_not_a_mapping() {
    let text = plus("just a string\n");
    reject(
        &text,
        Expect {
            object: "document 6",
            field: "",
            at: pos_of(&text, "just a string"),
            message: "a config document must be a mapping",
        },
    );
}

#[test]
fn crd_kind_with_a_bad_expression() {
    let text = plus(
        "apiVersion: config.istio.io/v1alpha2\nkind: listentry\nmetadata:\n  name: srcip\nspec:\n  value: source.ip | ip(\"0.0.0.0\"\n",
    );
    let live = Live::new();
    let errors = live.apply(&text).expect_err("rejected");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        ("instance/istio-system/srcip", "params.value")
    );
    let (_, line, col) = e.location.clone().expect("located");
    let (vl, vc) = pos_of(&text, "source.ip | ip(");
    assert_eq!(line, vl, "{e}");
    assert!(col > vc, "points into the expression: {e}");
    live.still_answers();
}

#[test]
fn undefined_alias() {
    let text = with("code: response.code | 200", "code: *nowhere");
    reject(
        &text,
        Expect {
            object: "document 4",
            field: "",
            at: pos_of(&text, "*nowhere"),
            message: "invalid YAML: while parsing node, found unknown anchor",
        },
    );
}

#[test]
fn too_many_documents() {
    let mut loader = Loader::new(Limits {
        max_documents: 3,
        ..Limits::default()
    });
    loader.add_str(FILE, GOOD);
    let errors = loader.finish().expect_err("rejected").0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].object, "document 4");
    assert_eq!(errors[0].message, "more than 3 documents");
    assert_eq!(errors[0].location, Some((FILE.to_string(), 27, 1)));
}

#[test]
fn malformed_protobuf() {
    let errors = mixer_config::load_protobuf("config.pb", &[0x0a, 0xff, 0xff, 0x01])
        .expect_err("rejected")
        .0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].object, "config.pb");
    assert!(
        errors[0]
            .message
            .starts_with("not a serialized mixer.v2.Config: "),
        "{}",
        errors[0]
    );
}

#[test]
fn several_errors_are_all_reported_in_order() {
    let text = with("- handler: denyall", "- handler: nosuch")
        .replace("response.code | 200", "response.codes");
    let live = Live::new();
    let errors = live.apply(&text).expect_err("rejected");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["params.variables.code", "actions[0].handler"]);
    assert!(errors.iter().all(|e| e.location.is_some()));
    live.still_answers();
}
