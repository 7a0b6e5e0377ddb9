//! Replays every input of `fuzz/corpus/expr/` through the fuzz harness (`mixer_expr::fuzz_one`),
//! so the corpus is a regression suite on stable Rust.

use std::path::PathBuf;

#[test]
fn fuzz_corpus_replays_without_panicking() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/expr");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).expect("read corpus file");
        // Run on a bounded thread stack: deep inputs must be refused, not overflow it. Optimised
        // builds need well under 256 KiB for the deepest accepted expression; unoptimised ones
        // (plain `cargo test`) give every temporary its own slot and get Rust's default 2 MiB.
        let name = path.display().to_string();
        if std::env::var("CORPUS_TRACE").is_ok() {
            eprintln!("{name}");
        }
        std::thread::Builder::new()
            .stack_size(
                std::env::var("CORPUS_STACK")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(if cfg!(debug_assertions) {
                        2 << 20
                    } else {
                        256 << 10
                    }),
            )
            .spawn(move || mixer_expr::fuzz_one(&data))
            .expect("spawn")
            .join()
            .unwrap_or_else(|_| panic!("fuzz_one panicked on {name}"));
        n += 1;
    }
    assert!(n >= 300, "the corpus holds only {n} inputs");
}
