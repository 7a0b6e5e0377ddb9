//! The checked-in C++ headers (include/mixer/bridge.rs.h, include/rust/cxx.h) are exactly what
//! cxx generates from src/bridge.rs. `MIXER_REGENERATE=1 cargo test -p mixer-ffi --test
//! headers` rewrites them.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check(generated: &Path, checked_in: &Path) -> Option<String> {
    let want = std::fs::read_to_string(generated)
        .unwrap_or_else(|e| panic!("read {}: {e}", generated.display()));
    let have = std::fs::read_to_string(checked_in).unwrap_or_default();
    if want == have {
        return None;
    }
    if std::env::var_os("MIXER_REGENERATE").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(checked_in.parent().expect("parent")).expect("create include dir");
        std::fs::write(checked_in, want).expect("write header");
        return None;
    }
    Some(format!(
        "{} differs from the generated {}",
        checked_in.display(),
        generated.display()
    ))
}

#[test]
fn checked_in_headers_match_the_bridge() {
    let gen_dir = Path::new(env!("MIXER_FFI_CXXBRIDGE_DIR")).join("include");
    let pairs = [
        (
            gen_dir.join("mixer-ffi/src/bridge.rs.h"),
            root().join("include/mixer/bridge.rs.h"),
        ),
        (
            gen_dir.join("rust/cxx.h"),
            root().join("include/rust/cxx.h"),
        ),
    ];
    let diffs: Vec<String> = pairs.iter().filter_map(|(g, c)| check(g, c)).collect();
    assert!(
        diffs.is_empty(),
        "{}\nrun `MIXER_REGENERATE=1 cargo test -p mixer-ffi --test headers` and commit the result",
        diffs.join("\n")
    );
}
