//! Retries of failed check calls with jittered exponential backoff, for handlers whose dispatch
//! controls configure a retry policy. The handler's timeout still bounds the whole exchange.

use std::sync::Arc;
use std::time::Duration;

use mixer_attr::Value;

use crate::adapter::{CheckResult, Handler, RequestContext};
use crate::instance::{CompiledInstance, InstanceView};
use crate::pal::Dispatcher;
use crate::pending::{Abandoned, Completer, PendingResult, Poll, pending};

/// A retry policy: attempts in all (the first included) and the backoff bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The policy of `DispatchControls.retry`, if it allows more than one attempt.
    pub fn from_config(r: Option<&mixer_proto::v2::RetryPolicy>) -> Option<RetryPolicy> {
        let r = r.filter(|r| r.max_attempts > 1)?;
        let d = |x: Option<prost_types::Duration>, default: u64| {
            x.and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_millis(default))
        };
        let initial_backoff = d(r.initial_backoff, 50);
        Some(RetryPolicy {
            max_attempts: r.max_attempts.min(10),
            initial_backoff,
            max_backoff: d(r.max_backoff, 1000).max(initial_backoff),
        })
    }

    /// The wait before attempt `attempt` (2 = the first retry): "full jitter", a uniformly random
    /// share of `min(max_backoff, initial_backoff * 2^(attempt-2))`, given `random` in [0, 1).
    pub fn backoff(&self, attempt: u32, random: f64) -> Duration {
        let exp = 2u32.saturating_pow(attempt.saturating_sub(2));
        let cap = self
            .initial_backoff
            .saturating_mul(exp)
            .min(self.max_backoff);
        cap.mul_f64(random.clamp(0.0, 1.0))
    }
}

fn failed(r: &Result<CheckResult, Abandoned>) -> bool {
    match r {
        Ok(r) => r.backend_failure,
        Err(Abandoned) => true,
    }
}

/// One check call being retried: the handler, the instance and an owned copy of its values.
pub(crate) struct RetryingCheck {
    pub handler: Arc<dyn Handler>,
    pub instance: Arc<CompiledInstance>,
    pub values: Vec<Value<'static>>,
    pub policy: RetryPolicy,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub random: Arc<dyn Fn() -> f64 + Send + Sync>,
}

impl RetryingCheck {
    /// Takes over after `attempt` failed (or went pending) and returns the final result.
    pub(crate) fn after(
        self,
        attempt: u32,
        first: Poll<CheckResult>,
    ) -> PendingResult<CheckResult> {
        let (done, result) = pending();
        Arc::new(self).follow(attempt, first, done);
        result
    }

    fn follow(
        self: Arc<Self>,
        attempt: u32,
        poll: Poll<CheckResult>,
        done: Completer<CheckResult>,
    ) {
        match poll {
            Poll::Ready(r) => self.settle(attempt, Ok(r), done),
            Poll::Pending(p) => p.on_complete(move |r| self.settle(attempt, r, done)),
        }
    }

    fn settle(
        self: Arc<Self>,
        attempt: u32,
        r: Result<CheckResult, Abandoned>,
        done: Completer<CheckResult>,
    ) {
        if !failed(&r) || attempt >= self.policy.max_attempts {
            match r {
                Ok(r) => done.complete(r),
                Err(Abandoned) => drop(done),
            }
            return;
        }
        let next = attempt + 1;
        let wait = self.policy.backoff(next, (self.random)());
        let dispatcher = self.dispatcher.clone();
        dispatcher.schedule(
            wait,
            Box::new(move || {
                let Some(check) = self.handler.as_check() else {
                    return;
                };
                let ctx = RequestContext {
                    dispatcher: &self.dispatcher,
                };
                let view = InstanceView {
                    instance: &self.instance,
                    values: &self.values,
                };
                let poll = check.check(&view, &ctx);
                self.follow(next, poll, done);
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        assert_eq!(
            p.backoff(2, 0.999_999),
            Duration::from_millis(100).mul_f64(0.999_999)
        );
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(100));
        assert_eq!(
            p.backoff(4, 0.5),
            Duration::from_millis(150),
            "capped at 300ms"
        );
        assert_eq!(
            p.backoff(40, 1.5),
            Duration::from_millis(300),
            "no overflow, random clamped"
        );
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
    }
}
