//! Builds the C++ host program (tests/cpp/*.cc) with the system g++ against libmixer_ffi.a,
//! runs it (natively and under valgrind), and checks the archive holds one Rust std.
//!
//! The archive is the one cargo built for this test run, found from this test's own path
//! (`<target dir>/<profile>/deps/`), so `CARGO_TARGET_DIR` and the default `target/` both work;
//! if there is none, it is built with `cargo build -p mixer-ffi`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const SCENARIOS: &[&str] = &[
    "bad_config_is_a_status",
    "allow",
    "deny_local_reply",
    "header_operations",
    "async_backend",
    "destroyed_before_completion",
    "mutation_surface",
    "mutation_stream",
    "report",
    "panic_becomes_status",
    "threads",
    "config_swap_in_flight",
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/<profile>`: this test runs from `<target>/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// The newest of `<profile>/libmixer_ffi.a` (cargo build) and `<profile>/deps/libmixer_ffi-*.a`
/// (what `cargo test` builds next to the rlib it links into this test, without copying it up).
fn newest_archive() -> Option<PathBuf> {
    let top = profile_dir().join("libmixer_ffi.a");
    let deps = std::fs::read_dir(profile_dir().join("deps"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path());
    std::iter::once(top)
        .chain(deps.filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libmixer_ffi-") && n.ends_with(".a"))
        }))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
}

fn archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            if let Some(a) = newest_archive() {
                return a;
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let target = profile_dir().parent().expect("target dir").to_path_buf();
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "mixer-ffi", "--lib"])
                .env("CARGO_TARGET_DIR", &target);
            if profile_dir().file_name().is_some_and(|p| p == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build");
            assert!(st.success(), "cargo build -p mixer-ffi failed");
            newest_archive().expect("libmixer_ffi.a was not built")
        })
        .clone()
}

/// Compiles the host once per test binary: one g++ invocation, -O1, only -lpthread -ldl -lm.
fn host_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mixer-ffi-cpp-host");
        let mut sources: Vec<PathBuf> = std::fs::read_dir(crate_dir().join("tests/cpp"))
            .expect("tests/cpp")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cc"))
            .collect();
        sources.sort();
        let include = crate_dir().join("../../include");
        let output = Command::new("g++")
            .args(["-std=c++17", "-O1", "-g", "-Wall", "-Werror"])
            .arg("-I")
            .arg(&include)
            .args(&sources)
            .arg(archive())
            .args(["-lpthread", "-ldl", "-lm", "-o"])
            .arg(&out)
            .output()
            .expect("run g++");
        assert!(
            output.status.success(),
            "g++ failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    })
}

fn check_scenarios(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("ALL OK (0 failures)"),
        "host failed ({}):\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
    for s in SCENARIOS {
        assert!(
            stdout.lines().any(|l| l == format!("ok {s}")),
            "scenario {s} did not pass:\n{stdout}"
        );
    }
    stdout
}

#[test]
fn cpp_host_runs_every_scenario() {
    let output = Command::new(host_binary()).output().expect("run host");
    let stdout = check_scenarios(&output);
    assert!(
        stdout.contains("threads=4 requests=200 allowed=400 denied=400"),
        "{stdout}"
    );
    // The report scenario's access log line went through the stdio adapter (stderr).
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"responseCode\":201"),
        "no access log line:\n{stderr}"
    );
}

#[test]
fn cpp_host_is_clean_under_valgrind() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "valgrind is missing (scripts/test-packages.txt installs it)"
        );
        eprintln!("skipped: valgrind is not installed (bash scripts/test installs it)");
        return;
    }
    let output = Command::new("valgrind")
        .args(["--error-exitcode=97", "--track-origins=no"])
        .arg(host_binary())
        .arg("quick")
        .output()
        .expect("run valgrind");
    check_scenarios(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ERROR SUMMARY: 0 errors"),
        "valgrind found errors:\n{stderr}"
    );
}

/// One staticlib, one Rust std: the std's panic entry and the allocator shim are defined once,
/// and the archive has one `std-*` member.
#[test]
fn archive_holds_one_rust_std() {
    let mut nm = Command::new("nm");
    // Read ELF directly: binutils' LTO plugin (an older LLVM) fails on rustc's embedded bitcode
    // and then reports "no symbols" for std's members.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    nm.arg("--target=elf64-x86-64");
    let output = nm
        .args(["-A", "--defined-only"])
        .arg(archive())
        .output()
        .expect("run nm");
    assert!(output.status.success(), "nm failed");
    let text = String::from_utf8_lossy(&output.stdout);
    // Symbol names: legacy (`rust_begin_unwind`) or v0-mangled (`..._7___rustc17rust_begin_unwind`).
    let count = |suffix: &str| {
        text.lines()
            .filter(|l| l.contains(" T "))
            .filter_map(|l| l.rsplit(' ').next())
            .filter(|sym| sym.ends_with(suffix))
            .count()
    };
    assert_eq!(
        count("rust_begin_unwind"),
        1,
        "definitions of rust_begin_unwind"
    );
    assert_eq!(count("__rust_alloc"), 1, "definitions of __rust_alloc");
    // And the bridge's C++ half is in the same archive.
    assert!(text.contains("mixer$cxxbridge1$"), "bridge shims missing");
    let members = Command::new("ar")
        .arg("t")
        .arg(archive())
        .output()
        .expect("run ar");
    let members = String::from_utf8_lossy(&members.stdout);
    let std_members = members.lines().filter(|m| m.starts_with("std-")).count();
    assert_eq!(std_members, 1, "std objects in the archive:\n{members}");
}
