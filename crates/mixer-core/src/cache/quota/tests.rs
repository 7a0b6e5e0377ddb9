//! The local-grant fast path of [`QuotaPrefetch::check`] against the full path: over varied
//! traffic and answers, both give the same decision and leave the same state.

use std::time::Duration;

use super::{PrefetchOutcome, QuotaPrefetch, QuotaPrefetchOptions};
use crate::pal::MonoTime;

/// A small deterministic generator (xorshift), so the test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn local_grants_match_the_full_path() {
    let mut fast_taken = 0u64;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let opts = QuotaPrefetchOptions {
            min_prefetch_amount: 1 + rng.below(20) as i64,
            ..QuotaPrefetchOptions::default()
        };
        let mut q = QuotaPrefetch::new(opts, MonoTime(0));
        let mut now = 0u64;
        let mut pending: Vec<(u64, i64, u64)> = Vec::new();
        for _ in 0..4_000 {
            // Gaps from 10 us to ~1.3 s, mostly short.
            now += match rng.below(10) {
                0 => rng.below(1_300_000_000),
                1..=3 => rng.below(50_000_000),
                _ => 10_000 + rng.below(2_000_000),
            };
            let t = MonoTime(now);
            // Answer prefetches sent ~200 ms ago, in full, short, or failed.
            let mut i = 0;
            while i < pending.len() {
                if now >= pending[i].2 {
                    let (id, amount, _) = pending.swap_remove(i);
                    let outcome = match rng.below(8) {
                        0 => PrefetchOutcome::Failed,
                        1 | 2 => PrefetchOutcome::Granted {
                            amount: rng.below(amount as u64 + 1) as i64,
                            valid_for: Duration::from_millis(rng.below(3_000)),
                        },
                        _ => PrefetchOutcome::Granted {
                            amount,
                            valid_for: Duration::from_secs(1 + rng.below(60)),
                        },
                    };
                    q.on_response(id, outcome, t);
                } else {
                    i += 1;
                }
            }
            let amount = match rng.below(20) {
                0 => 0,
                1 => 1 + rng.below(50) as i64,
                _ => 1,
            };
            let mut full = q.clone();
            let expected = full.check_full(amount, t);
            let fast = q.grant_locally(amount, t);
            let got = if fast {
                fast_taken += 1;
                super::QuotaDecision {
                    granted: true,
                    prefetch: None,
                }
            } else {
                q.check_full(amount, t)
            };
            assert_eq!(got, expected, "seed {seed} at {now}");
            assert_eq!(
                format!("{q:?}"),
                format!("{full:?}"),
                "seed {seed} at {now}"
            );
            if let Some(pf) = got.prefetch {
                pending.push((pf.id, pf.amount, now + 200_000_000));
            }
        }
    }
    // The comparison means something only if both paths ran often.
    assert!(fast_taken > 10_000, "fast path taken {fast_taken} times");
}
