//! `mixer demo` runs on the embedded config with no external service and shows the decisions
//! the scripted traffic should get.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn demo_runs_and_decides_as_scripted() {
    let out = Command::new(env!("CARGO_BIN_EXE_mixer"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decisions: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .filter(|l| l.contains("ALLOW") || l.contains("DENY"))
        .collect();
    assert_eq!(decisions.len(), 14, "{stdout}");
    let expect = [
        (1, "ALLOW (requestcountquota: 1 granted)"),
        (7, "DENY PERMISSION_DENIED: Not allowed"),
        (8, "DENY PERMISSION_DENIED: Not allowed"),
        (9, "DENY PERMISSION_DENIED: 203.0.113.50 is blacklisted"),
        (
            12,
            "DENY RESOURCE_EXHAUSTED: Quota is exhausted for: requestcountquota",
        ),
        (13, "ALLOW (requestcountquota: 1 granted)"),
    ];
    for (n, text) in expect {
        assert!(
            decisions[n - 1].ends_with(text),
            "line {n}: {}",
            decisions[n - 1]
        );
    }
    assert!(
        decisions[7].contains(" hit "),
        "the repeated denial comes from the check cache: {}",
        decisions[7]
    );
    assert!(stdout.contains("Access log (stdio handler):"), "{stdout}");
    assert_eq!(
        stdout
            .matches("\"instance\":\"accesslog.instance.istio-system\"")
            .count(),
        14,
        "{stdout}"
    );
    assert!(
        stdout.contains("Pipeline: 14 checks (4 denied)"),
        "{stdout}"
    );
}
