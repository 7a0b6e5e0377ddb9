//! Checks that the checked-in generated code (`src/gen/mixer.v2.rs`) matches `proto/`.
//!
//! Set `MIXER_REGENERATE=1` to overwrite the checked-in file instead of failing.

use std::path::Path;

#[test]
fn generated_code_is_current() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto_root = manifest.join("../../proto");
    mixer_codegen::check(&mixer_codegen::Generated {
        files: mixer_codegen::proto_files(&proto_root),
        proto_root,
        package_file: "mixer.v2.rs",
        checked_in: manifest.join("src/gen/mixer.v2.rs"),
        regenerate_with: "MIXER_REGENERATE=1 cargo test -p mixer-proto --test generated_code_is_current",
    });
}
