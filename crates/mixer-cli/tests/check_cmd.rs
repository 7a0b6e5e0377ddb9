//! `mixer check` on the Bookinfo policy samples: decisions as JSON objects, quotas charged as
//! the samples' QuotaSpecBinding says, bad input reported per line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

fn shared(file: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/istio-configs")
        .join(file);
    assert!(
        p.exists(),
        "{} is missing: the tests need ../shared beside the repository",
        p.display()
    );
    p
}

fn temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mixer-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn mixer(args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mixer"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn deny_label_sample() {
    let config = shared("bookinfo-mixer-rule-deny-label.yaml");
    let denied = temp(
        "denied.json",
        r#"{"destination.labels": {"app": "ratings"}, "source.labels": {"app": "reviews", "version": "v3"}}"#,
    );
    let (code, out, err) = mixer(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--attrs",
        denied.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let d = &out[0];
    assert_eq!(d["status"], json!({"code": 7, "message": "Not allowed"}));
    assert_eq!(d["valid_duration"], "5s");
    assert_eq!(d["valid_use_count"], 1000);
    let mut referenced: Vec<String> = serde_json::from_value(d["referenced"].clone()).unwrap();
    referenced.sort();
    assert_eq!(
        referenced,
        [
            "destination.labels",
            "destination.labels[app]",
            "source.labels",
            "source.labels[app]",
            "source.labels[version]"
        ]
    );
    assert_eq!(d["quotas"], json!({}));
    assert_eq!(d["request_header_operations"], json!([]));
    assert_eq!(d["direct_response"], Value::Null);

    let allowed = temp(
        "allowed.json",
        r#"{"destination.labels": {"app": "ratings"}, "source.labels": {"app": "reviews", "version": "v2"}}"#,
    );
    let (_, out, _) = mixer(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--attrs",
        allowed.to_str().unwrap(),
    ]);
    assert_eq!(out[0]["status"]["code"], 0);
}

#[test]
fn productpage_rate_limit_sample_behaves_as_the_tutorial_says() {
    // The tutorial: productpage is limited to 2 requests per 5 seconds (the first matching
    // override); other services are not bound to the quota at all.
    let config = shared("bookinfo-mixer-rule-productpage-ratelimit.yaml");
    let productpage = r#"{"destination.service.name": "productpage", "destination.service.namespace": "default", "destination.labels": {"app": "productpage"}}"#;
    let reviews = r#"{"destination.service.name": "reviews", "destination.service.namespace": "default", "destination.labels": {"app": "reviews"}}"#;
    let requests = temp(
        "ratelimit.jsonl",
        &[productpage, productpage, productpage, reviews, productpage].join("\n"),
    );
    let (code, out, err) = mixer(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--requests",
        requests.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let codes: Vec<i64> = out
        .iter()
        .map(|d| d["status"]["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [0, 0, 8, 0, 8], "{out:#?}");
    assert_eq!(out[0]["quotas"]["requestcountquota"]["granted_amount"], 1);
    assert_eq!(
        out[2]["status"]["message"],
        "Quota is exhausted for: requestcountquota"
    );
    assert_eq!(
        out[3]["quotas"],
        json!({}),
        "reviews is not bound to the quota"
    );
}

#[test]
fn bad_lines_are_reported_and_the_run_goes_on() {
    let config = shared("bookinfo-mixer-rule-deny-label.yaml");
    let requests = temp(
        "bad.jsonl",
        "{\"source.labels\": {\"version\": \"v3\"}}\nnot json\n{\"no.such.attribute\": 1}\n{\"response.code\": \"two hundred\"}\n{}\n",
    );
    let (code, out, _) = mixer(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--requests",
        requests.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(out.len(), 5);
    assert_eq!(out[0]["status"]["code"], 0);
    assert!(
        out[1]["error"].as_str().unwrap().contains(":2: not JSON"),
        "{}",
        out[1]
    );
    assert!(
        out[2]["error"]
            .as_str()
            .unwrap()
            .contains("unknown attribute `no.such.attribute`"),
        "{}",
        out[2]
    );
    assert!(
        out[3]["error"].as_str().unwrap().contains("response.code"),
        "{}",
        out[3]
    );
    assert_eq!(out[4]["status"]["code"], 0);
}

#[test]
fn rejected_config_is_an_error_with_its_position() {
    let bad = temp(
        "bad.yaml",
        "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata:\n  name: r\nspec:\n  match: source.ip ==\n",
    );
    let attrs = temp("empty.json", "{}");
    let out = Command::new(env!("CARGO_BIN_EXE_mixer"))
        .args([
            "check",
            "--config",
            bad.to_str().unwrap(),
            "--attrs",
            attrs.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:6:") && err.contains("rule/istio-system/r: field `match`"),
        "{err}"
    );
}
