//! Compiles the cxx bridge's C++ half into this crate (and so into the static library).
//! The generated header is also checked in at include/mixer/bridge.rs.h (tests/headers.rs
//! keeps the copy identical); this script exports where cxx-build wrote it.

fn main() {
    let include = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include");
    cxx_build::bridge("src/bridge.rs")
        .include(&include)
        .flag_if_supported("-std=c++17")
        .compile("mixer_ffi_bridge");
    let out = std::env::var("OUT_DIR").unwrap_or_default();
    println!("cargo:rustc-env=MIXER_FFI_CXXBRIDGE_DIR={out}/cxxbridge");
    println!("cargo:rerun-if-changed=src/bridge.rs");
    println!("cargo:rerun-if-changed=../../include/mixer/host.h");
}
