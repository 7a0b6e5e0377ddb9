//! `mixer config validate` and `mixer config show` end to end (the built binary).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn istio(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/istio-configs")
        .join(file)
}

fn mixer(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mixer"))
        .args(args)
        .args(paths)
        .output()
        .expect("the mixer binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh scratch directory under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mixer-config-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn validate_accepts_a_valid_file() {
    let out = mixer(&["config", "validate"], &[&istio("testdata-deny.yaml")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("valid: 1 handlers, 1 instances, 1 rules"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_reports_missing_adapters_one_per_line_unless_skipped() {
    let file = istio("istio-1.4-default-mixer-config.yaml");
    let out = mixer(&["config", "validate"], &[&file]);
    let stdout = text(&out.stdout);
    // prometheus and kubernetesenv: errors while this build lacks them.
    for line in stdout.lines() {
        assert!(line.starts_with(&format!("{}:", file.display())), "{line}");
        assert!(line.contains(": handler/istio-system/"), "{line}");
        assert!(line.contains(": field `adapter`: adapter `"), "{line}");
        assert!(
            line.contains("` is not in this build (available: "),
            "{line}"
        );
    }
    if stdout.contains("adapter `prometheus`") {
        assert!(
            stdout.contains(":652:20: handler/istio-system/prometheus: field `adapter`"),
            "{stdout}"
        );
    }
    assert_eq!(
        out.status.code(),
        Some(if stdout.is_empty() { 0 } else { 1 })
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("note: ")
            && stderr.contains("skipped DestinationRule istio-system/istio-policy"),
        "{stderr}"
    );

    let skipped = mixer(&["config", "validate", "--skip-unknown-adapters"], &[&file]);
    assert_eq!(skipped.status.code(), Some(0), "{}", text(&skipped.stdout));
    assert_eq!(text(&skipped.stdout), "");
    let stderr = text(&skipped.stderr);
    assert!(
        stderr.contains("valid: 3 handlers, 11 instances, 8 rules"),
        "{stderr}"
    );
}

#[test]
fn validate_prints_position_object_field_and_message() {
    let dir = scratch("bad");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata:\n  name: r\nspec:\n  match: source.ip\n  actions:\n  - handler: nosuch\n    instances: [nothing]\n",
    )
    .expect("write");
    let out = mixer(&["config", "validate"], &[&file]);
    assert_eq!(out.status.code(), Some(1));
    let f = file.display();
    assert_eq!(
        text(&out.stdout),
        format!(
            "{f}:6:10: rule/istio-system/r: field `match`: expression `source.ip` is IP_ADDRESS, not BOOL\n\
             {f}:8:14: rule/istio-system/r: field `actions[0].handler`: no handler `nosuch` (none are defined)\n"
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_reports_yaml_errors_and_unreadable_paths() {
    let dir = scratch("syntax");
    let file = dir.join("broken.yaml");
    std::fs::write(&file, "kind: rule\nmetadata:\n  name: [unclosed\n").expect("write");
    let missing = dir.join("missing.yaml");
    let out = mixer(&["config", "validate"], &[&file, &missing]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!(
            "{}:4:1: document 1: invalid YAML: ",
            file.display()
        )),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!("{}: cannot read: ", missing.display())),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_reads_directories_of_yaml_files_in_order() {
    let dir = scratch("dir");
    std::fs::copy(istio("testdata-deny.yaml"), dir.join("a-deny.yaml")).expect("copy");
    std::fs::copy(
        istio("testdata-source_ip_deny.yaml"),
        dir.join("b-fragment.yml"),
    )
    .expect("copy");
    std::fs::write(dir.join("notes.txt"), "not config").expect("write");
    let out = mixer(&["config", "validate"], &[&dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("valid: 1 handlers, 1 instances, 2 rules"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn show_prints_rules_actions_handlers_instances_and_attributes() {
    let out = mixer(
        &["config", "show"],
        &[
            &istio("testdata-deny.yaml"),
            &istio("bookinfo-mixer-rule-deny-ip-crd.yaml"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    for want in [
        "rules (2):",
        "  rule/istio-system/mixerdenysome\n    match: request.headers[\"clnt\"] == \"abc\"\n",
        "    check -> denyall.istio-system (denier): denyrequest.instance.istio-system (checknothing)\n    reads: request.headers\n",
        "  rule/istio-system/checkip\n",
        "    check -> whitelistip.istio-system (listchecker): sourceip.instance.istio-system (listentry)\n    reads: source.labels\n",
        "handlers (2):\n  denyall.istio-system (denier)\n  whitelistip.istio-system (listchecker)\n",
        "instances (2):\n  denyrequest.instance.istio-system (checknothing)\n    reads: (none)\n  sourceip.instance.istio-system (listentry)\n    reads: source.ip\n",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[test]
fn show_of_the_default_config_with_unknown_adapters_skipped() {
    let out = mixer(
        &["config", "show", "--skip-unknown-adapters"],
        &[&istio("istio-1.4-default-mixer-config.yaml")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("rules (8):\n"), "{stdout}");
    assert!(
        stdout.contains(
            "    report -> stdio.istio-system (stdio): accesslog.instance.istio-system (logentry)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("    reads: connection.event, context.protocol\n"),
        "{stdout}"
    );
    assert!(stdout.contains("instances (11):"), "{stdout}");
}
