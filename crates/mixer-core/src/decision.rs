//! The combined outcome of a precondition check across every matched rule and handler.

use std::sync::Arc;

use mixer_attr::{Duration, ReferencedAttributes};

use crate::adapter::{CheckResult, HeaderChange, QuotaResult};
use crate::status::{Code, Status};

/// How long an allow is valid when no handler said otherwise (Mixer's default).
pub const DEFAULT_VALID_DURATION: Duration = Duration::from_secs(60);
/// How many uses an allow is valid for when no handler said otherwise (Mixer's default).
pub const DEFAULT_VALID_USE_COUNT: i32 = 10_000;

/// A response the proxy sends instead of forwarding the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    pub code: u16,
    pub body: String,
}

/// Who denied: the rule, the handler, and the status (experimental denials included, marked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub rule: Arc<str>,
    pub handler: Arc<str>,
    pub status: Status,
    /// The rule is in experimental mode: counted and audited, not enforced.
    pub experimental: bool,
}

/// The decision for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: Status,
    pub valid_duration: Duration,
    pub valid_use_count: i32,
    /// The attributes the decision depended on (the check cache key).
    pub referenced: ReferencedAttributes,
    pub request_header_operations: Vec<HeaderChange>,
    pub response_header_operations: Vec<HeaderChange>,
    pub direct_response: Option<DirectResponse>,
    /// Denials by rules in experimental mode (counted and logged, never enforced).
    pub experimental_denials: u32,
    /// The quotas charged, by quota name (empty when the request charges none).
    pub quotas: Vec<(String, QuotaResult)>,
    /// Every denial and backend failure behind the decision, in rule order.
    pub denials: Vec<Denial>,
}

impl Decision {
    /// True when the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.status.is_ok()
    }
}

/// Folds handler results into one decision: any deny wins (the first one seen keeps its status
/// and message), the shortest validity and the smallest use count win.
#[derive(Debug)]
pub struct DecisionBuilder {
    status: Status,
    valid_duration: Duration,
    valid_use_count: i32,
    request_ops: Vec<HeaderChange>,
    response_ops: Vec<HeaderChange>,
    direct_response: Option<DirectResponse>,
    experimental_denials: u32,
    denials: Vec<Denial>,
}

impl Default for DecisionBuilder {
    fn default() -> Self {
        DecisionBuilder {
            status: Status::ok(),
            valid_duration: DEFAULT_VALID_DURATION,
            valid_use_count: DEFAULT_VALID_USE_COUNT,
            request_ops: Vec::new(),
            response_ops: Vec::new(),
            direct_response: None,
            experimental_denials: 0,
            denials: Vec::new(),
        }
    }
}

impl DecisionBuilder {
    /// An allow with the default validity.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one handler's result. In experimental mode a deny is only counted.
    pub fn add(&mut self, result: &CheckResult, experimental: bool) {
        if !result.status.is_ok() {
            if experimental {
                self.experimental_denials += 1;
                return;
            }
            if self.status.is_ok() {
                self.status = result.status.clone();
            }
        }
        self.valid_duration = self.valid_duration.min(result.valid_duration);
        self.valid_use_count = self.valid_use_count.min(result.valid_use_count);
    }

    /// Adds a failure (backend error, timeout, bad instance) under the handler's policy:
    /// fail-close denies with `code`; fail-open allows but keeps the answer from being cached.
    pub fn add_failure(
        &mut self,
        code: Code,
        message: String,
        fail_open: bool,
        experimental: bool,
    ) {
        if fail_open {
            self.valid_duration = Duration::ZERO;
            self.valid_use_count = 0;
        } else {
            let r = CheckResult::deny(Status::new(code, message), Duration::ZERO, 0);
            self.add(&r, experimental);
        }
    }

    /// Adds the result of `handler` for `rule`, remembering who denied.
    pub fn add_from(
        &mut self,
        result: &CheckResult,
        experimental: bool,
        rule: &Arc<str>,
        handler: &Arc<str>,
    ) {
        if !result.status.is_ok() {
            self.denials.push(Denial {
                rule: rule.clone(),
                handler: handler.clone(),
                status: result.status.clone(),
                experimental,
            });
        }
        if let Some(r) = &result.direct_response {
            self.direct_response(r.clone());
        }
        self.add(result, experimental);
    }

    /// Records a failure of `handler` for `rule` (see [`DecisionBuilder::add_failure`]).
    #[allow(clippy::too_many_arguments)]
    pub fn add_failure_from(
        &mut self,
        code: Code,
        message: String,
        fail_open: bool,
        experimental: bool,
        rule: &Arc<str>,
        handler: &Arc<str>,
    ) {
        self.denials.push(Denial {
            rule: rule.clone(),
            handler: handler.clone(),
            status: Status::new(code, message.clone()),
            experimental: experimental || fail_open,
        });
        self.add_failure(code, message, fail_open, experimental);
    }

    /// Keeps the decision out of the check cache (it depends on more than the attributes, e.g.
    /// on a fault-injection draw).
    pub fn uncacheable(&mut self) {
        self.valid_duration = Duration::ZERO;
        self.valid_use_count = 0;
    }

    /// Adds a header operation on the request.
    pub fn request_op(&mut self, op: HeaderChange) {
        self.request_ops.push(op);
    }

    /// Adds a header operation on the response.
    pub fn response_op(&mut self, op: HeaderChange) {
        self.response_ops.push(op);
    }

    /// Sets the direct response (the first one wins).
    pub fn direct_response(&mut self, r: DirectResponse) {
        self.direct_response.get_or_insert(r);
    }

    /// The decision.
    pub fn finish(self, referenced: ReferencedAttributes) -> Decision {
        Decision {
            status: self.status,
            valid_duration: self.valid_duration.max(Duration::ZERO),
            valid_use_count: self.valid_use_count.max(0),
            referenced,
            request_header_operations: self.request_ops,
            response_header_operations: self.response_ops,
            direct_response: self.direct_response,
            experimental_denials: self.experimental_denials,
            quotas: Vec::new(),
            denials: self.denials,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_deny_wins_and_shortest_validity() {
        let mut b = DecisionBuilder::new();
        b.add(&CheckResult::allow(Duration::from_secs(10), 100), false);
        b.add(
            &CheckResult::deny(
                Status::new(Code::PERMISSION_DENIED, "no"),
                Duration::from_secs(5),
                7,
            ),
            false,
        );
        b.add(
            &CheckResult::deny(
                Status::new(Code::UNAUTHENTICATED, "later"),
                Duration::from_secs(30),
                3,
            ),
            false,
        );
        let d = b.finish(ReferencedAttributes::new());
        assert_eq!(d.status, Status::new(Code::PERMISSION_DENIED, "no"));
        assert_eq!(
            (d.valid_duration, d.valid_use_count),
            (Duration::from_secs(5), 3)
        );
        assert!(!d.is_allowed());
    }

    #[test]
    fn experimental_denies_are_only_counted() {
        let mut b = DecisionBuilder::new();
        b.add(
            &CheckResult::deny(
                Status::new(Code::PERMISSION_DENIED, "x"),
                Duration::from_secs(1),
                1,
            ),
            true,
        );
        b.add_failure(Code::UNAVAILABLE, "down".into(), false, true);
        let d = b.finish(ReferencedAttributes::new());
        assert!(d.is_allowed());
        assert_eq!(d.experimental_denials, 2);
        assert_eq!(d.valid_duration, DEFAULT_VALID_DURATION);
    }

    #[test]
    fn fail_open_allows_but_is_not_cacheable() {
        let mut b = DecisionBuilder::new();
        b.add_failure(Code::UNAVAILABLE, "down".into(), true, false);
        let d = b.finish(ReferencedAttributes::new());
        assert!(d.is_allowed());
        assert_eq!((d.valid_duration, d.valid_use_count), (Duration::ZERO, 0));
    }
}
