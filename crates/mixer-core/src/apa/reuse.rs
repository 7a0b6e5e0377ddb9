//! Each thread's last outputs per stage, reused for the thread's next request with the same
//! instance values: a proxy thread sees the same pods, token and route request after request.
//!
//! A stage's slot holds outputs its handler declared reusable ([`Produced::reusable`]: valid
//! while the handler's [`generation`] holds) or cacheable (`cache_for`: valid until they
//! expire). A hit costs one comparison of the instance values, and the request borrows the
//! outputs from the slot: no handler call, no lookup in the shared cache and no reference
//! count traffic. The slots are borrowed for the whole run of a chain; a run nested in another
//! on the same thread finds them taken and goes without.
//!
//! Slots are tagged with their stage's id (unique to one stage of one snapshot), so a slot
//! never answers for another stage or config. A thread keeps one slot per stage position of the
//! longest chain it ran: after a config swap, the old outputs (and what they hold, such as a
//! handler's compiled templates) stay alive until the thread's next request replaces them.
//!
//! [`Produced::reusable`]: crate::adapter::Produced::reusable
//! [`generation`]: crate::adapter::AttributeProducer::generation

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use mixer_attr::Value;

use crate::adapter::ApaOutput;
use crate::pal::MonoTime;

/// One stage's last outputs on one thread.
#[derive(Default)]
pub(crate) struct Slot {
    stage: u64,
    generation: u64,
    /// `None`: valid while the generation holds.
    expires: Option<MonoTime>,
    /// The instance values the outputs are for (strings in buffers reused from one request to
    /// the next).
    values: Vec<Value<'static>>,
    output: Option<Arc<dyn ApaOutput>>,
}

/// Whether a kept value and a request's are the same (maps are never compared: instances with
/// a map field are not kept).
#[inline]
fn same(kept: &Value<'_>, v: &Value<'_>) -> bool {
    match (kept, v) {
        (Value::String(a), Value::String(b))
        | (Value::EmailAddress(a), Value::EmailAddress(b))
        | (Value::Uri(a), Value::Uri(b))
        | (Value::DnsName(a), Value::DnsName(b)) => a.as_bytes() == b.as_bytes(),
        (Value::Int64(a), Value::Int64(b)) => a == b,
        (Value::Double(a), Value::Double(b)) => a.to_bits() == b.to_bits(),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
        (Value::Duration(a), Value::Duration(b)) => a == b,
        (Value::IpAddress(a), Value::IpAddress(b)) => a == b,
        _ => false,
    }
}

/// Copies `v` into `kept`, reusing `kept`'s string buffer when both are strings.
fn copy_into(kept: &mut Value<'static>, v: &Value<'_>) {
    if let (Value::String(Cow::Owned(buf)), Value::String(s)) = (&mut *kept, v) {
        buf.clear();
        buf.push_str(s);
    } else {
        *kept = v.reborrow().into_owned();
    }
}

impl Slot {
    /// The kept outputs, when they are `stage`'s for `values` in `generation` and unexpired.
    #[inline]
    pub(crate) fn hit(
        &self,
        stage: u64,
        generation: u64,
        values: &[Value<'_>],
        now: MonoTime,
    ) -> Option<&dyn ApaOutput> {
        let fresh = self.stage == stage
            && self.generation == generation
            && self.expires.is_none_or(|e| e > now)
            && self.values.len() == values.len()
            && self.values.iter().zip(values).all(|(k, v)| same(k, v));
        if fresh { self.output.as_deref() } else { None }
    }

    /// The kept outputs (after a [`Slot::hit`]).
    pub(crate) fn output(&self) -> Option<&dyn ApaOutput> {
        self.output.as_deref()
    }

    /// Whether outputs for `values` can be kept (not when a value is a map).
    #[inline]
    pub(crate) fn keeps(values: &[Value<'_>]) -> bool {
        !values.iter().any(|v| matches!(v, Value::StringMap(_)))
    }

    /// Keeps `output` as `stage`'s for `values` in `generation`, until `expires` (`None`:
    /// while the generation holds), and lends it back.
    pub(crate) fn keep(
        &mut self,
        stage: u64,
        generation: u64,
        values: &[Value<'_>],
        expires: Option<MonoTime>,
        output: Arc<dyn ApaOutput>,
    ) -> &dyn ApaOutput {
        self.values.truncate(values.len());
        for (i, v) in values.iter().enumerate() {
            match self.values.get_mut(i) {
                Some(kept) => copy_into(kept, v),
                None => self.values.push(v.reborrow().into_owned()),
            }
        }
        self.stage = stage;
        self.generation = generation;
        self.expires = expires;
        &**self.output.insert(output)
    }
}

thread_local! {
    static SLOTS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Runs `run` with this thread's slots for a chain of `stages` stages, or with none when they
/// are in use (a run nested in another on this thread).
pub(crate) fn with_slots<R>(stages: usize, run: impl FnOnce(Option<&mut [Slot]>) -> R) -> R {
    let mut run = Some(run);
    let done = SLOTS
        .try_with(|s| {
            let mut slots = s.try_borrow_mut().ok()?;
            if slots.len() < stages {
                slots.resize_with(stages, Slot::default);
            }
            let run = run.take()?;
            Some(run(slots.get_mut(..stages)))
        })
        .ok()
        .flatten();
    match (done, run) {
        (Some(r), _) => r,
        (None, Some(run)) => run(None),
        // `run` is taken only by the branch that returns its result.
        (None, None) => unreachable!("the chain ran without returning"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::ApaValues;

    fn out() -> Arc<dyn ApaOutput> {
        Arc::new(ApaValues(vec![Some(Value::Int64(1))]))
    }

    #[test]
    fn a_slot_answers_for_its_stage_values_generation_and_time_only() {
        let mut slot = Slot::default();
        let a = [Value::str("x"), Value::Int64(1)];
        assert!(slot.hit(7, 0, &a, MonoTime(0)).is_none(), "empty");
        slot.keep(7, 3, &a, Some(MonoTime(10)), out());
        assert!(slot.hit(7, 3, &a, MonoTime(9)).is_some());
        assert!(slot.hit(8, 3, &a, MonoTime(9)).is_none(), "another stage");
        assert!(
            slot.hit(7, 4, &a, MonoTime(9)).is_none(),
            "another generation"
        );
        assert!(slot.hit(7, 3, &a, MonoTime(10)).is_none(), "expired");
        for other in [
            vec![Value::str("x"), Value::Int64(2)],
            vec![Value::str("x1"), Value::Int64(1)],
            vec![Value::str("x")],
            vec![Value::str("x"), Value::Int64(1), Value::Bool(true)],
            vec![Value::Uri("x".into()), Value::Int64(1)],
        ] {
            assert!(slot.hit(7, 3, &other, MonoTime(9)).is_none(), "{other:?}");
        }
        // Kept strings reuse their buffers; values of other types replace them.
        let b = [Value::String("longer".into()), Value::Int64(1)];
        slot.keep(7, 3, &b, None, out());
        assert!(
            slot.hit(7, 3, &b, MonoTime(u64::MAX)).is_some(),
            "no expiry"
        );
        let c = [Value::Int64(5)];
        slot.keep(7, 3, &c, None, out());
        assert!(slot.hit(7, 3, &c, MonoTime(0)).is_some());
        assert!(slot.hit(7, 3, &b, MonoTime(0)).is_none());
        // Maps are never compared, so never kept.
        let m = [Value::StringMap(mixer_attr::StringMapRef::empty())];
        assert!(!Slot::keeps(&m) && Slot::keeps(&c));
    }

    #[test]
    fn a_nested_run_goes_without_slots() {
        let outer = with_slots(2, |slots| {
            let inner = with_slots(2, |slots| slots.is_none());
            (slots.map(|s| s.len()), inner)
        });
        assert_eq!(outer, (Some(2), true));
    }
}
