//! Statistics counters bumped on every request from many threads. A plain shared atomic would
//! move its cache line between cores on every increment; here each thread adds to its own
//! stripe (a cache line of its own), and reading sums the stripes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 16;

#[derive(Debug)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// A counter incremented from many threads without contending (see the module docs). Reads
/// are sums of the stripes: exact once the writers are done, and never behind by more than
/// the increments in flight.
pub struct StripedCounter {
    stripes: [Stripe; STRIPES],
}

impl StripedCounter {
    /// A counter at zero.
    pub const fn new() -> Self {
        StripedCounter {
            stripes: [const { Stripe(AtomicU64::new(0)) }; STRIPES],
        }
    }

    /// Adds `n` (on the calling thread's stripe).
    #[inline]
    pub fn fetch_add(&self, n: u64, order: Ordering) {
        if let Some(s) = self.stripes.get(thread_stripe()) {
            s.0.fetch_add(n, order);
        }
    }

    /// The total.
    pub fn load(&self, order: Ordering) -> u64 {
        self.stripes
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(order)))
    }
}

impl Default for StripedCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StripedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.load(Ordering::Relaxed))
    }
}

/// The calling thread's stripe: threads take stripes in turn as they first count.
#[inline]
fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.try_with(|s| *s).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_from_many_threads_add_up() {
        let c = Arc::new(StripedCounter::new());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        c.fetch_add(5, Ordering::Relaxed);
        assert_eq!(c.load(Ordering::Relaxed), 20_005);
        assert_eq!(format!("{c:?}"), "20005");
    }
}
