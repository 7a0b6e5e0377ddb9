//! Checks that the checked-in generated code (`src/gen/mixer.v2.rs`) matches `proto/`.
//!
//! Set `MIXER_REGENERATE=1` to overwrite the checked-in file instead of failing.

use std::path::{Path, PathBuf};

/// Name of the file prost-build writes for package `mixer.v2`.
const GENERATED: &str = "mixer.v2.rs";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// The `.proto` files of `proto/`, relative to it, sorted.
fn proto_files(root: &Path) -> Vec<String> {
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

/// Compiles `proto/` and returns the generated Rust source of package `mixer.v2`.
fn generate() -> String {
    let proto_root = workspace_root().join("proto");
    let files = proto_files(&proto_root);
    assert!(
        !files.is_empty(),
        "no .proto files under {}",
        proto_root.display()
    );
    let fds = protox::compile(&files, [&proto_root])
        .unwrap_or_else(|e| panic!("protox failed to compile {files:?}: {e:?}"));

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let out_dir =
        std::env::temp_dir().join(format!("mixer-proto-gen-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("create temporary output directory");

    let result = prost_build::Config::new()
        .out_dir(&out_dir)
        // Deterministic encoding and iteration order for every map.
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
        "{} is stale: it differs from what proto/ generates, first at line {}:\n  \
         checked in: {}\n  generated:  {}\n({} vs {} lines)\n\
         Regenerate with:\n  MIXER_REGENERATE=1 cargo test -p mixer-proto --test generated_code_is_current\n\
         then review the change with `git diff crates/mixer-proto/src/gen/`.",
        checked_in_path.display(),
        first_diff + 1,
        line(&checked_in),
        line(&generated),
        checked_in.lines().count(),
        generated.lines().count(),
    );
}
