//! Parse, print/re-parse, type-check, compile and evaluate arbitrary bytes. The harness itself is
//! `mixer_expr::fuzz_one`, which `crates/mixer-expr/tests/fuzz_corpus.rs` also runs over
//! `fuzz/corpus/expr/` on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mixer_expr::fuzz_one(data);
});
