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
//! never answers for another stage or config.
//!
//! [`Produced::reusable`]: crate::adapter::Produced::reusable
//! [`generation`]: crate::adapter::AttributeProducer::generation

use std::cell::RefCell;
use std::sync::Arc;

use mixer_attr::Value;

use super::cache::KeyForm;
use crate::adapter::ApaOutput;
use crate::cache::key::encode_value;
use crate::pal::MonoTime;

/// One stage's last outputs on one thread.
#[derive(Default)]
pub(crate) struct Slot {
    stage: u64,
    generation: u64,
    /// `None`: valid while the generation holds.
    expires: Option<MonoTime>,
    key: Vec<u8>,
    /// Encoding buffer for the request's key (swapped with `key` when it is stored).
    probe: Vec<u8>,
    output: Option<Arc<dyn ApaOutput>>,
}

/// A request's key for a slot: the single string's bytes in place (raw form), or the values
/// encoded into the slot's probe buffer.
#[derive(Clone, Copy)]
pub(crate) enum SlotKey<'v> {
    Raw(&'v [u8]),
    Probe,
}

impl Slot {
    /// Builds the request's key for `values` (`None`: such values are not reused).
    #[inline]
    pub(crate) fn key_for<'v>(
        &mut self,
        form: KeyForm,
        values: &'v [Value<'_>],
    ) -> Option<SlotKey<'v>> {
        match (form, values) {
            (KeyForm::Raw, [Value::String(s)]) => Some(SlotKey::Raw(s.as_bytes())),
            (KeyForm::Raw, _) => None,
            (KeyForm::Encoded, _) => {
                self.probe.clear();
                for v in values {
                    encode_value(&mut self.probe, v);
                }
                Some(SlotKey::Probe)
            }
        }
    }

    fn key_bytes<'a>(&'a self, key: SlotKey<'a>) -> &'a [u8] {
        match key {
            SlotKey::Raw(b) => b,
            SlotKey::Probe => &self.probe,
        }
    }

    /// The kept outputs, when they are `stage`'s for `key` in `generation` and unexpired.
    #[inline]
    pub(crate) fn hit(
        &self,
        stage: u64,
        generation: u64,
        key: SlotKey<'_>,
        now: MonoTime,
    ) -> Option<&dyn ApaOutput> {
        let fresh = self.stage == stage
            && self.generation == generation
            && self.expires.is_none_or(|e| e > now)
            && self.key == self.key_bytes(key);
        if fresh { self.output.as_deref() } else { None }
    }

    /// The kept outputs (after a [`Slot::hit`]).
    pub(crate) fn output(&self) -> Option<&dyn ApaOutput> {
        self.output.as_deref()
    }

    /// Keeps `output` as `stage`'s for `key` in `generation`, until `expires` (`None`: while
    /// the generation holds), and lends it back.
    pub(crate) fn keep(
        &mut self,
        stage: u64,
        generation: u64,
        key: SlotKey<'_>,
        expires: Option<MonoTime>,
        output: Arc<dyn ApaOutput>,
    ) -> &dyn ApaOutput {
        match key {
            SlotKey::Raw(b) => {
                self.key.clear();
                self.key.extend_from_slice(b);
            }
            SlotKey::Probe => std::mem::swap(&mut self.key, &mut self.probe),
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
    fn a_slot_answers_for_its_stage_key_generation_and_time_only() {
        let mut slot = Slot::default();
        let a = [Value::str("x"), Value::Int64(1)];
        let b = [Value::str("x"), Value::Int64(2)];
        let k = slot.key_for(KeyForm::Encoded, &a).unwrap();
        assert!(slot.hit(7, 0, k, MonoTime(0)).is_none(), "empty");
        slot.keep(7, 3, k, Some(MonoTime(10)), out());
        let k = slot.key_for(KeyForm::Encoded, &a).unwrap();
        assert!(slot.hit(7, 3, k, MonoTime(9)).is_some());
        assert!(slot.hit(8, 3, k, MonoTime(9)).is_none(), "another stage");
        assert!(
            slot.hit(7, 4, k, MonoTime(9)).is_none(),
            "another generation"
        );
        assert!(slot.hit(7, 3, k, MonoTime(10)).is_none(), "expired");
        let k = slot.key_for(KeyForm::Encoded, &b).unwrap();
        assert!(slot.hit(7, 3, k, MonoTime(9)).is_none(), "other values");
        // Raw keys: the string itself; other values are not kept.
        let t = [Value::str("token")];
        let k = slot.key_for(KeyForm::Raw, &t).unwrap();
        slot.keep(9, 0, k, None, out());
        assert!(slot.hit(9, 0, k, MonoTime(u64::MAX)).is_some(), "no expiry");
        let u = [Value::str("token2")];
        let k = slot.key_for(KeyForm::Raw, &u).unwrap();
        assert!(slot.hit(9, 0, k, MonoTime(0)).is_none());
        assert!(slot.key_for(KeyForm::Raw, &[Value::Int64(1)]).is_none());
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
