//! Replays the fuzz corpus (`fuzz/corpus/config_yaml`: the 33 Istio files and hand-written nasty
//! inputs) through the fuzz target's body, plus deterministic mutations of every entry, so the
//! ordinary test run covers what the fuzzer found or was seeded with.

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config_yaml");
    let mut entries: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("fuzz/corpus/config_yaml exists")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("readable"))
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn every_corpus_entry_runs_without_panicking() {
    let entries = corpus();
    assert!(entries.len() >= 50, "corpus has {} entries", entries.len());
    assert!(
        entries
            .iter()
            .filter(|(n, _)| n.starts_with("istio-"))
            .count()
            == 33
    );
    for (name, data) in &entries {
        let started = Instant::now();
        mixer_config::fuzz_one(data);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
    }
}

/// xorshift64*: deterministic mutations without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"\n",
    b": ",
    b"- ",
    b"---\n",
    b"&a ",
    b"*a",
    b"<<: ",
    b"[",
    b"]",
    b"{",
    b"}",
    b"'",
    b"\"",
    b"|\n",
    b"!!str ",
    b"\t",
    b"#",
    b"? ",
    b"kind: rule\n",
    b"kind: handler\n",
    b"match: ",
    b"== ",
    b"| ",
    b"source.ip",
    b"ip(\"",
    b"\xff",
    b"${",
    b"\\u0000",
    b"  ",
    b"null",
    b"~",
];

#[test]
fn mutated_corpus_entries_run_without_panicking() {
    let entries = corpus();
    let seed = std::env::var("MIXER_FUZZ_SEED")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng(seed);
    let started = Instant::now();
    // More rounds on demand: MIXER_FUZZ_ROUNDS=2000 cargo test --release ... mutated
    let rounds: usize = std::env::var("MIXER_FUZZ_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(8);
    let budget = Duration::from_secs(if rounds > 8 { 3600 } else { 120 });
    for round in 0..rounds {
        for (_, data) in &entries {
            if data.len() > 64 << 10 {
                continue;
            }
            let mut m = data.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(m.len() + 1);
                match rng.below(4) {
                    0 => {
                        let t = TOKENS[rng.below(TOKENS.len())];
                        m.splice(at..at, t.iter().copied());
                    }
                    1 if !m.is_empty() => {
                        let end = (at + 1 + rng.below(16)).min(m.len());
                        m.drain(at.min(end)..end);
                    }
                    2 if !m.is_empty() => {
                        let i = at.min(m.len() - 1);
                        m[i] = rng.next() as u8;
                    }
                    _ => {
                        // Duplicate a slice (grows documents, repeats keys).
                        let end = (at + rng.below(64)).min(m.len());
                        let slice = m[at.min(end)..end].to_vec();
                        m.splice(at..at, slice);
                    }
                }
            }
            mixer_config::fuzz_one(&m);
        }
        assert!(started.elapsed() < budget, "round {round}: too slow");
    }
}
