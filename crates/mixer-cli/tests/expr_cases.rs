//! Runs `mixer expr --batch` on the shared expression table (Mixer's own IL test cases) and
//! grades the results with `shared/expr/grade.py`: every case must pass and every `referenced`
//! record must match.

use std::path::PathBuf;
use std::process::Command;

fn shared_dir() -> PathBuf {
    // crates/mixer-cli -> repo root -> shared/ beside it.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = root.join("../shared");
    assert!(
        shared.join("expr/cases.jsonl").is_file() && shared.join("expr/grade.py").is_file(),
        "the shared test table is missing: expected {} and grade.py beside it (shared/ lives next to the repository root)",
        shared.join("expr/cases.jsonl").display()
    );
    shared
}

#[test]
fn shared_expression_cases_all_pass() {
    let shared = shared_dir();
    let cases = shared.join("expr/cases.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_mixer"))
        .args(["expr", "--batch"])
        .arg(&cases)
        .output()
        .expect("run mixer expr --batch");
    assert!(
        out.status.success(),
        "mixer expr --batch failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let results = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("expr-results-{}.jsonl", std::process::id()));
    std::fs::write(&results, &out.stdout).expect("write results");

    let grade = Command::new("python3")
        .arg(shared.join("expr/grade.py"))
        .arg(&cases)
        .arg(&results)
        .output()
        .expect("run python3 grade.py (is python3 installed?)");
    let report = String::from_utf8_lossy(&grade.stdout);
    println!("{report}");
    eprintln!("{}", String::from_utf8_lossy(&grade.stderr));
    let _ = std::fs::remove_file(&results);
    assert!(
        grade.status.success(),
        "grade.py reported failures:\n{report}"
    );

    let line = report
        .lines()
        .find(|l| l.starts_with("referenced: "))
        .expect("grade.py prints a `referenced: X/Y match` line");
    let figure = line
        .trim_start_matches("referenced: ")
        .trim_end_matches(" match");
    let (x, y) = figure.split_once('/').expect("X/Y");
    assert!(
        y.trim() != "0",
        "no referenced records were compared: {line}"
    );
    assert_eq!(x.trim(), y.trim(), "referenced attributes differ: {line}");
}

#[test]
fn eval_prints_typed_json_and_errors_with_positions() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let attrs = dir.join(format!("expr-attrs-{}.json", std::process::id()));
    std::fs::write(
        &attrs,
        r#"{"request.headers": {"user-agent": "curlish"}, "source.ip": "10.0.0.1"}"#,
    )
    .expect("write attrs");
    let out = Command::new(env!("CARGO_BIN_EXE_mixer"))
        .args([
            "expr",
            "eval",
            r#"match(request.headers["user-agent"], "curl*") && source.ip == ip("10.0.0.1")"#,
        ])
        .arg("--attrs")
        .arg(&attrs)
        .output()
        .expect("run mixer expr eval");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(v["type"], "BOOL");
    assert_eq!(v["value"], true);
    let mut refs: Vec<String> = v["referenced"]
        .as_array()
        .expect("referenced")
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_string())
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        [
            "request.headers",
            "request.headers[user-agent]",
            "source.ip"
        ]
    );

    let out = Command::new(env!("CARGO_BIN_EXE_mixer"))
        .args(["expr", "eval", "response.code ==\n  true"])
        .output()
        .expect("run mixer expr eval");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1:15:"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_mixer"))
        .args(["expr", "eval", "source.ip == ip(\"10.0.0.1\")"])
        .output()
        .expect("run mixer expr eval");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("source.ip"));
    let _ = std::fs::remove_file(&attrs);
}

#[test]
fn batch_survives_malformed_lines() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let cases = dir.join(format!("expr-bad-cases-{}.jsonl", std::process::id()));
    std::fs::write(
        &cases,
        concat!(
            "{not json\n",
            r#"{"id": "no-expr"}"#,
            "\n",
            r#"{"id": "bad-manifest", "expr": "a", "manifest": {"a": "NOPE"}, "attrs": {}}"#,
            "\n",
            r#"{"id": "bad-attrs", "expr": "a", "manifest": {"a": "INT64"}, "attrs": [1]}"#,
            "\n",
            r#"{"id": "ok", "expr": "a | 3", "manifest": {"a": "INT64"}, "attrs": {}}"#,
            "\n",
        ),
    )
    .expect("write cases");
    let out = Command::new(env!("CARGO_BIN_EXE_mixer"))
        .args(["expr", "--batch"])
        .arg(&cases)
        .output()
        .expect("run mixer expr --batch");
    let _ = std::fs::remove_file(&cases);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["id"], "no-expr");
    assert_eq!(lines[0]["error"]["kind"], "compile");
    assert_eq!(lines[1]["error"]["kind"], "compile");
    assert_eq!(lines[2]["error"]["kind"], "eval");
    assert_eq!(lines[3]["value"], 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":1:"),
        "the bad line is named"
    );
    assert_eq!(out.status.code(), Some(1));
}
