//! Checks that the checked-in generated code (`src/gen/metrics.rs`) matches
//! `proto/knative/stat.proto` at the workspace root.
//!
//! Set `MIXER_REGENERATE=1` to overwrite the checked-in file instead of failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Name of the file prost-build writes for package `metrics`.
const GENERATED: &str = "metrics.rs";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// Compiles `proto/knative/stat.proto` and returns the generated Rust source of package `metrics`.
fn generate() -> String {
    let proto_root = workspace_root().join("proto");
    let files = ["knative/stat.proto"];
    let fds = protox::compile(files, [&proto_root])
        .unwrap_or_else(|e| panic!("protox failed to compile {files:?}: {e:?}"));

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let out_dir =
        std::env::temp_dir().join(format!("mixer-knative-gen-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("create temporary output directory");

    let result = prost_build::Config::new()
        .out_dir(&out_dir)
        .btree_map(["."])
        .compile_fds(fds);
    let generated = result
        .map_err(|e| format!("prost-build failed: {e}"))
        .and_then(|()| {
            std::fs::read_to_string(out_dir.join(GENERATED))
                .map_err(|e| format!("prost-build wrote no {GENERATED}: {e}"))
        });
    let _ = std::fs::remove_dir_all(&out_dir);
    generated.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn generated_code_is_current() {
    let generated = generate();
    let checked_in_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join("gen")
        .join(GENERATED);

    if std::env::var_os("MIXER_REGENERATE").is_some_and(|v| v == "1") {
        std::fs::write(&checked_in_path, &generated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", checked_in_path.display()));
        eprintln!("regenerated {}", checked_in_path.display());
        return;
    }

    let checked_in = std::fs::read_to_string(&checked_in_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", checked_in_path.display()));
    if checked_in == generated {
        return;
    }
    let first_diff = checked_in
        .lines()
        .zip(generated.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
    let line = |s: &str| {
        s.lines()
            .nth(first_diff)
            .unwrap_or("<end of file>")
            .to_string()
    };
    panic!(
        "{} is stale: it differs from what proto/knative/stat.proto generates, first at line {}:\n  \
         checked in: {}\n  generated:  {}\n\
         Regenerate with:\n  MIXER_REGENERATE=1 cargo test -p mixer-knative --test generated_code_is_current",
        checked_in_path.display(),
        first_diff + 1,
        line(&checked_in),
        line(&generated),
    );
}
