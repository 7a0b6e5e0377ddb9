//! Config front-end fuzz target: arbitrary bytes as a YAML config file (or, when not UTF-8, as a
//! serialized mixer.v2.Config), loaded and compiled against the built-in adapters with unknown
//! adapters skipped. Must never panic, overflow the stack or run out of memory.
//!
//! `cargo +nightly fuzz run config_yaml fuzz/corpus/config_yaml`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mixer_config::fuzz_one(data);
});
