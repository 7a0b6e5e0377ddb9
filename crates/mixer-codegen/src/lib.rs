//! Test support for crates that check in prost-generated code: compile `.proto` files with
//! protox (pure Rust, no `protoc`), generate with prost-build, and fail with the first differing
//! line when the checked-in file is stale (`MIXER_REGENERATE=1` rewrites it instead).
//!
//! Used only from tests, where a failed check must panic with a clear message.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// What to generate and where the checked-in copy lives.
#[derive(Debug)]
pub struct Generated<'a> {
    /// The import root (the workspace's `proto/`).
    pub proto_root: PathBuf,
    /// `.proto` files relative to `proto_root`, with `/` separators.
    pub files: Vec<String>,
    /// The file prost-build writes for the package (`mixer.v2.rs`, `metrics.rs`).
    pub package_file: &'a str,
    /// The checked-in copy.
    pub checked_in: PathBuf,
    /// The command that regenerates it, for the failure message.
    pub regenerate_with: &'a str,
}

/// Every `.proto` file under `root`, relative to it, sorted.
pub fn proto_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let path = rel.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                // Protobuf import paths use `/` on every platform.
                let parts: Vec<String> = path
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    out
}

fn generate(g: &Generated<'_>) -> String {
    assert!(
        !g.files.is_empty(),
        "no .proto files under {}",
        g.proto_root.display()
    );
    let fds = protox::compile(&g.files, [&g.proto_root])
        .unwrap_or_else(|e| panic!("protox failed to compile {:?}: {e:?}", g.files));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let out_dir =
        std::env::temp_dir().join(format!("mixer-codegen-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("create temporary output directory");
    let result = prost_build::Config::new()
        .out_dir(&out_dir)
        // Deterministic encoding and iteration order for every map.
        .btree_map(["."])
        .compile_fds(fds);
    let generated = result
        .map_err(|e| format!("prost-build failed: {e}"))
        .and_then(|()| {
            std::fs::read_to_string(out_dir.join(g.package_file))
                .map_err(|e| format!("prost-build wrote no {}: {e}", g.package_file))
        });
    let _ = std::fs::remove_dir_all(&out_dir);
    generated.unwrap_or_else(|e| panic!("{e}"))
}

/// Regenerates and compares with the checked-in copy; panics naming the first differing line.
/// With `MIXER_REGENERATE=1` in the environment, rewrites the checked-in copy instead.
pub fn check(g: &Generated<'_>) {
    let generated = generate(g);
    let path = &g.checked_in;
    if std::env::var_os("MIXER_REGENERATE").is_some_and(|v| v == "1") {
        std::fs::write(path, &generated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("regenerated {}", path.display());
        return;
    }
    let checked_in = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
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
        "{} is stale: it differs from what {:?} generate, first at line {}:\n  checked in: {}\n  \
         generated:  {}\n({} vs {} lines)\nRegenerate with:\n  {}\nthen review the change with git diff.",
        path.display(),
        g.files,
        first_diff + 1,
        line(&checked_in),
        line(&generated),
        checked_in.lines().count(),
        generated.lines().count(),
        g.regenerate_with,
    );
}
