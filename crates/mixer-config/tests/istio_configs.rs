//! Every file of `shared/istio-configs` (real Istio 1.4 Mixer config): what it loads to, and
//! what it compiles to against this build's adapters (unknown adapters skipped).

use std::path::PathBuf;

use mixer_config::{LoadedConfig, compile_loaded, idle_platform, load_paths};
use mixer_core::CompileOptions;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/istio-configs")
}

/// handlers, instances, rules, manifests, quota specs, quota spec bindings, notes
type Counts = [usize; 7];

enum Load {
    Ok(Counts),
    Err(&'static str),
}

enum Compile {
    /// Compiles with unknown adapters skipped: (instances, rules) of the snapshot.
    Ok(usize, usize),
    /// Fails with this message (the file is a fragment that refers to objects of another file).
    Err(&'static str),
    /// Not loaded, so not compiled.
    NotLoaded,
}

const TEMPLATE_SYMLINK: &str = "a config document must be a mapping with `apiVersion`, `kind`, `metadata` and `spec`, \
                                not a scalar `../../template/";

#[rustfmt::skip]
const TABLE: &[(&str, Load, Compile)] = &[
    //                                                              h  i  r  m qs qsb notes
    ("bookinfo-mixer-rule-deny-ip-crd.yaml",                   Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-deny-ip.yaml",                       Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-deny-label-crd.yaml",                Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-deny-label.yaml",                    Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-deny-serviceaccount.yaml",           Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-deny-whitelist-crd.yaml",            Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-deny-whitelist.yaml",                Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-ingress-denial.yaml",                Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-kubernetesenv-telemetry.yaml",       Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-productpage-ratelimit-crd.yaml",     Load::Ok([1, 1, 1, 0, 1, 1, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-productpage-ratelimit.yaml",         Load::Ok([1, 1, 1, 0, 1, 1, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-productpage-redis-quota-fixed-window.yaml", Load::Ok([1, 1, 1, 0, 1, 1, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-productpage-redis-quota-rolling-window.yaml", Load::Ok([1, 1, 1, 0, 1, 1, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-ratings-denial.yaml",                Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-ratings-ratelimit.yaml",             Load::Ok([1, 1, 1, 0, 1, 1, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-ratings-redis-quota-fixed-window.yaml", Load::Ok([1, 1, 1, 0, 1, 1, 0]), Compile::Ok(1, 1)),
    ("bookinfo-mixer-rule-ratings-redis-quota-rolling-window.yaml", Load::Ok([1, 1, 1, 0, 1, 1, 0]), Compile::Ok(1, 1)),
    ("bookinfo-prometheus-oop-rule.yaml",                      Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    // Two DestinationRules are skipped with a note each.
    ("istio-1.4-default-mixer-config.yaml",                    Load::Ok([3, 11, 8, 2, 0, 0, 2]), Compile::Ok(11, 8)),
    ("testdata-accesslog.yaml",                                Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("testdata-attributes.yaml",                               Load::Ok([0, 0, 0, 2, 0, 0, 0]), Compile::Ok(0, 0)),
    ("testdata-deny.yaml",                                     Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("testdata-kubernetesenv.yaml",                            Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    ("testdata-listcheck.yaml",                                Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    // Git symlinks to Mixer's template descriptors, checked out as one-line text files.
    ("testdata-listentrytemplate.yaml",                        Load::Err(TEMPLATE_SYMLINK), Compile::NotLoaded),
    ("testdata-metrics.yaml",                                  Load::Ok([0, 4, 0, 0, 0, 0, 0]), Compile::Ok(4, 0)),
    ("testdata-metrictemplate.yaml",                           Load::Err(TEMPLATE_SYMLINK), Compile::NotLoaded),
    // Its rules refer to the instances of testdata-metrics.yaml and testdata-tcpmetrics.yaml.
    ("testdata-prometheus.yaml",                               Load::Ok([1, 0, 4, 0, 0, 0, 0]),
        Compile::Err("field `actions[0].instances[0]`: no instance `requestcount.metric`")),
    ("testdata-quota.yaml",                                    Load::Ok([1, 1, 1, 0, 0, 0, 0]), Compile::Ok(1, 1)),
    // Fragments: their handlers are defined in testdata-deny.yaml / testdata-accesslog.yaml.
    ("testdata-source_ip_deny.yaml",                           Load::Ok([0, 0, 1, 0, 0, 0, 0]),
        Compile::Err("12:14: rule/istio-system/mixerdenyip: field `actions[0].handler`: no handler `denyall`")),
    ("testdata-source_user_filter.yaml",                       Load::Ok([0, 0, 1, 0, 0, 0, 0]),
        Compile::Err("12:14: rule/istio-system/mixerdenyuser: field `actions[0].handler`: no handler `denyall`")),
    ("testdata-tcp_accesslog.yaml",                            Load::Ok([0, 1, 1, 0, 0, 0, 0]),
        Compile::Err("44:14: rule/istio-system/stdiotcp: field `actions[0].handler`: no handler `stdio.handler`")),
    ("testdata-tcpmetrics.yaml",                               Load::Ok([0, 4, 0, 0, 0, 0, 0]), Compile::Ok(4, 0)),
];

fn counts(l: &LoadedConfig) -> Counts {
    let c = &l.config;
    [
        c.handlers.len(),
        c.instances.len(),
        c.rules.len(),
        c.manifests.len(),
        c.quota_specs.len(),
        c.quota_spec_bindings.len(),
        l.notes.len(),
    ]
}

#[test]
fn the_table_covers_every_file() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .expect("shared/istio-configs exists beside the repo")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    let listed: Vec<&str> = TABLE.iter().map(|(f, _, _)| *f).collect();
    assert_eq!(files, listed);
    assert_eq!(files.len(), 33);
}

#[test]
fn every_file_loads_as_the_table_says() {
    for (file, expected, _) in TABLE {
        let result = load_paths(&[dir().join(file)]);
        match (expected, result) {
            (Load::Ok(want), Ok(loaded)) => assert_eq!(&counts(&loaded), want, "{file}"),
            (Load::Err(want), Err(e)) => {
                assert_eq!(e.0.len(), 1, "{file}: {e}");
                assert!(e.to_string().contains(want), "{file}: {e}");
                assert!(
                    e.to_string().contains(&format!("{file}:1:1: document 1:")),
                    "{file}: {e}"
                );
            }
            (Load::Ok(_), Err(e)) => panic!("{file}: expected to load, got:\n{e}"),
            (Load::Err(want), Ok(_)) => {
                panic!("{file}: expected the error `{want}`, but it loaded")
            }
        }
    }
}

#[test]
fn every_file_compiles_with_unknown_adapters_skipped() {
    let registry = mixer_adapters::registry();
    let platform = idle_platform();
    let options = CompileOptions {
        skip_unknown_adapters: true,
        ..Default::default()
    };
    for (file, _, expected) in TABLE {
        let Ok(loaded) = load_paths(&[dir().join(file)]) else {
            assert!(matches!(expected, Compile::NotLoaded), "{file}");
            continue;
        };
        match (
            expected,
            compile_loaded(&loaded, &registry, &platform, None, &options),
        ) {
            (Compile::Ok(instances, rules), Ok(snapshot)) => {
                assert_eq!(
                    (snapshot.instances.len(), snapshot.rules.len()),
                    (*instances, *rules),
                    "{file}"
                );
                // Every handler is either built or skipped because this build lacks its adapter
                // (handlers built only when a rule uses them).
                for h in &loaded.config.handlers {
                    let fq = format!("{}.{}", h.name, h.namespace);
                    let built = snapshot.handler(&fq).is_some();
                    let known = registry.get(&h.adapter).is_some();
                    assert_eq!(built, known, "{file}: handler {fq} (adapter {})", h.adapter);
                    if !known {
                        let skipped = format!(
                            "adapter `{}` is not in this build; handler skipped",
                            h.adapter
                        );
                        assert!(
                            snapshot.warnings.iter().any(|w| w.contains(&skipped)),
                            "{file}: {:?}",
                            snapshot.warnings
                        );
                    }
                }
            }
            (Compile::Err(want), Err(errors)) => {
                assert!(errors.iter().all(|e| e.location.is_some()), "{file}");
                assert!(
                    errors[0].to_string().contains(want),
                    "{file}: {}",
                    errors[0]
                );
            }
            (Compile::Ok(..) | Compile::NotLoaded, Err(errors)) => {
                let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
                panic!("{file}: expected to compile, got:\n{}", shown.join("\n"))
            }
            (_, Ok(_)) => panic!("{file}: expected an error, but it compiled"),
        }
    }
}

#[test]
fn strict_compile_names_each_missing_adapter_with_its_position() {
    let registry = mixer_adapters::registry();
    let loaded = load_paths(&[dir().join("istio-1.4-default-mixer-config.yaml")]).expect("loads");
    let result = compile_loaded(
        &loaded,
        &registry,
        &idle_platform(),
        None,
        &CompileOptions::default(),
    );
    let missing: Vec<(&str, u32)> = [("prometheus", 652), ("kubernetesenv", 930)]
        .into_iter()
        .filter(|(a, _)| registry.get(a).is_none())
        .collect();
    match result {
        Ok(_) => assert!(missing.is_empty()),
        Err(errors) => {
            assert_eq!(errors.len(), missing.len(), "{errors:?}");
            for (e, (adapter, line)) in errors.iter().zip(&missing) {
                assert_eq!(e.object, format!("handler/istio-system/{adapter}"));
                assert_eq!(e.field, "adapter");
                assert!(
                    e.message
                        .starts_with(&format!("adapter `{adapter}` is not in this build")),
                    "{e}"
                );
                let (file, l, c) = e.location.clone().expect("located");
                assert!(file.ends_with("istio-1.4-default-mixer-config.yaml"));
                assert_eq!((l, c), (*line, 20), "{e}");
            }
        }
    }
}

#[test]
fn fragments_compile_together_with_the_files_they_refer_to() {
    let registry = mixer_adapters::registry();
    let options = CompileOptions {
        skip_unknown_adapters: true,
        ..Default::default()
    };
    for files in [
        &[
            "testdata-deny.yaml",
            "testdata-source_ip_deny.yaml",
            "testdata-source_user_filter.yaml",
        ][..],
        &["testdata-accesslog.yaml", "testdata-tcp_accesslog.yaml"][..],
        &[
            "testdata-metrics.yaml",
            "testdata-tcpmetrics.yaml",
            "testdata-prometheus.yaml",
        ][..],
    ] {
        let paths: Vec<PathBuf> = files.iter().map(|f| dir().join(f)).collect();
        let loaded = load_paths(&paths).expect("loads");
        let snapshot = compile_loaded(&loaded, &registry, &idle_platform(), None, &options)
            .unwrap_or_else(|e| panic!("{files:?}: {e:?}"));
        assert_eq!(snapshot.rules.len(), loaded.config.rules.len(), "{files:?}");
        // Rules whose handler this build has get their actions.
        let built = loaded
            .config
            .handlers
            .iter()
            .all(|h| registry.get(&h.adapter).is_some());
        if built {
            assert!(
                snapshot
                    .rules
                    .iter()
                    .all(|r| !r.check_actions.is_empty() || !r.report_actions.is_empty()),
                "{files:?}"
            );
        }
    }
}

#[test]
fn crd_kinds_resolve_name_dot_kind_references() {
    let registry = mixer_adapters::registry();
    for file in [
        "bookinfo-mixer-rule-deny-label-crd.yaml",
        "bookinfo-mixer-rule-deny-ip-crd.yaml",
    ] {
        let loaded = load_paths(&[dir().join(file)]).expect("loads");
        let snapshot = compile_loaded(
            &loaded,
            &registry,
            &idle_platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        let rule = &snapshot.rules[0];
        assert_eq!(rule.check_actions.len(), 1, "{file}");
        let action = &rule.check_actions[0];
        assert_eq!(action.instances.len(), 1, "{file}");
        let handler = &snapshot.handlers[action.handler];
        assert!(
            ["denier", "listchecker"].contains(&handler.adapter),
            "{file}"
        );
    }
    // The default namespace applies to the CRD samples that give none.
    let loaded =
        load_paths(&[dir().join("bookinfo-mixer-rule-deny-label-crd.yaml")]).expect("loads");
    assert_eq!(loaded.config.handlers[0].namespace, "istio-system");
    assert_eq!(loaded.config.handlers[0].adapter, "denier");
    assert_eq!(loaded.config.instances[0].template, "checknothing");
    assert_eq!(
        loaded.config.rules[0].actions[0].handler,
        "denyreviewsv3handler.denier"
    );
}

#[test]
fn the_whole_directory_loads_with_duplicates_reported() {
    // Several samples define the same objects (they were applied one at a time); loading the
    // directory at once reports each redefinition with both places.
    let err = load_paths(&[dir()]).expect_err("duplicates and the two symlink files");
    let text = err.to_string();
    assert!(
        text.contains("duplicate handler name (first defined at "),
        "{text}"
    );
    assert!(
        text.contains("testdata-listentrytemplate.yaml:1:1: document 1:"),
        "{text}"
    );
}

#[test]
fn default_config_details_are_carried_over() {
    let loaded = load_paths(&[dir().join("istio-1.4-default-mixer-config.yaml")]).expect("loads");
    let c = &loaded.config;
    let attrs = c
        .instances
        .iter()
        .find(|i| i.name == "attributes")
        .expect("kubernetes instance");
    assert_eq!(attrs.template, "kubernetes");
    assert_eq!(attrs.attribute_bindings.len(), 21);
    assert_eq!(
        attrs.attribute_bindings["source.labels"],
        "$out.source_labels | emptyStringMap()"
    );
    let manifest = c
        .manifests
        .iter()
        .find(|m| m.name == "kubernetes")
        .expect("manifest");
    assert_eq!(
        manifest.attributes["source.ip"].value_type,
        mixer_config::v2::ValueType::IpAddress as i32
    );
    let stdio = c
        .handlers
        .iter()
        .find(|h| h.name == "stdio")
        .expect("stdio handler");
    assert_eq!(stdio.adapter, "stdio");
    assert!(
        loaded
            .notes
            .iter()
            .all(|n| n.contains("skipped DestinationRule"))
    );
    assert_eq!(loaded.source_map.len(), 24);

    let oop = load_paths(&[dir().join("bookinfo-prometheus-oop-rule.yaml")]).expect("loads");
    let conn = oop.config.handlers[0]
        .connection
        .as_ref()
        .expect("connection");
    assert_eq!(conn.address, "prometheusadapter:8080");

    let quota =
        load_paths(&[dir().join("bookinfo-mixer-rule-productpage-ratelimit.yaml")]).expect("loads");
    let spec = &quota.config.quota_specs[0];
    assert_eq!(
        (
            spec.rules[0].quotas[0].quota.as_str(),
            spec.rules[0].quotas[0].charge
        ),
        ("requestcountquota", 1)
    );
    let binding = &quota.config.quota_spec_bindings[0];
    assert_eq!(binding.services[0].name, "productpage");
    assert_eq!(binding.quota_specs[0].name, "request-count");
}

#[test]
fn the_default_config_exposes_istio_metric_names_and_labels() {
    // With the prometheus adapter in this build only `kubernetesenv` is skipped.
    let registry = mixer_adapters::registry();
    let loaded = load_paths(&[dir().join("istio-1.4-default-mixer-config.yaml")]).expect("loads");
    let options = CompileOptions {
        skip_unknown_adapters: true,
        ..Default::default()
    };
    let snapshot =
        compile_loaded(&loaded, &registry, &idle_platform(), None, &options).expect("compiles");
    let skipped: Vec<&String> = snapshot
        .warnings
        .iter()
        .filter(|w| w.contains("handler skipped"))
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("kubernetesenv"));
    let prom = mixer_adapters::prometheus::handlers(&snapshot);
    assert_eq!(prom.len(), 1);
    assert_eq!(prom[0].name(), "prometheus.istio-system");
    assert_eq!(
        prom[0].metric_names(),
        [
            "istio_requests_total",
            "istio_request_duration_seconds",
            "istio_request_bytes",
            "istio_response_bytes",
            "istio_tcp_sent_bytes_total",
            "istio_tcp_received_bytes_total",
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
        ]
    );
}
