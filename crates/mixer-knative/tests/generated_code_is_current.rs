//! Checks that the checked-in generated code (`src/gen/metrics.rs`) matches
//! `proto/knative/stat.proto` at the workspace root.
//!
//! Set `MIXER_REGENERATE=1` to overwrite the checked-in file instead of failing.

use std::path::Path;

#[test]
fn generated_code_is_current() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    mixer_codegen::check(&mixer_codegen::Generated {
        proto_root: manifest.join("../../proto"),
        files: vec!["knative/stat.proto".to_string()],
        package_file: "metrics.rs",
        checked_in: manifest.join("src/gen/metrics.rs"),
        regenerate_with: "MIXER_REGENERATE=1 cargo test -p mixer-knative --test generated_code_is_current",
    });
}
