//! One stage's outputs for one request: the thread's previous ones when the instance values are
//! the same ([`super::reuse`]), else the stage's shared cache, else the handler.

use mixer_attr::{Bag, Value};

use super::reuse::Slot;
use super::{ApaRunReport, Held, INLINE_FIELDS};
use crate::adapter::{ApaContext, AttributeProducer};
use crate::instance::{CompiledInstance, InstanceError, InstanceView};
use crate::pal::MonoTime;
use crate::snapshot::{ApaStage, FailurePolicy, Snapshot};
use crate::status::{Code, Status};

/// The stage's outputs, `None` when the handler failed (its failure is recorded in `report`).
/// `slot` is the thread's slot for the stage, if it has one for this run.
pub(super) fn produce<'r>(
    snapshot: &Snapshot,
    stage: &ApaStage,
    bag: &dyn Bag,
    ctx: &ApaContext<'_>,
    report: &mut ApaRunReport,
    slot: Option<&'r mut Slot>,
) -> Option<Held<'r>> {
    let instance = &snapshot.instances[stage.instance];
    let n = instance.fields.len();
    let entry = &snapshot.handlers[stage.handler];
    let run = Stage {
        producer: entry.handler.as_attribute_producer()?,
        fail_close: entry.failure_policy == FailurePolicy::FailClose,
        stage,
        ctx,
    };
    // A stack buffer just large enough; only values owning memory are dropped (most borrow
    // from the request).
    macro_rules! inline {
        ($size:expr) => {{
            let mut values = std::mem::ManuallyDrop::new([const { Value::Bool(false) }; $size]);
            let r = run.produce(instance, bag, report, slot, &mut values[..n]);
            for v in values.iter_mut().take(n) {
                if v.owns_memory() {
                    drop(std::mem::replace(v, Value::Bool(false)));
                }
            }
            r
        }};
    }
    match n {
        0..=2 => inline!(2),
        3..=4 => inline!(4),
        5..=INLINE_FIELDS => inline!(INLINE_FIELDS),
        _ => {
            let mut values = vec![Value::Bool(false); n];
            run.produce(instance, bag, report, slot, &mut values)
        }
    }
}

/// Records that `instance`'s `field` failed to evaluate.
#[cold]
#[inline(never)]
fn instance_failed(
    report: &mut ApaRunReport,
    fail_close: bool,
    instance: &CompiledInstance,
    field: &str,
    error: mixer_expr::EvalError,
) {
    report.eval_errors += 1;
    let e = InstanceError {
        instance: instance.name.to_string(),
        field: field.to_string(),
        error,
    };
    report.fail(fail_close, Status::new(Code::INTERNAL, e.to_string()));
}

/// A stage of a snapshot, run for one request.
struct Stage<'a> {
    producer: &'a dyn AttributeProducer,
    fail_close: bool,
    stage: &'a ApaStage,
    ctx: &'a ApaContext<'a>,
}

impl Stage<'_> {
    fn produce<'r, 'b>(
        &self,
        instance: &'b CompiledInstance,
        bag: &'b dyn Bag,
        report: &mut ApaRunReport,
        slot: Option<&'r mut Slot>,
        values: &mut [Value<'b>],
    ) -> Option<Held<'r>> {
        // Read before producing: outputs kept under it may be newer than it, never older.
        let generation = self.producer.generation();
        for (v, field) in values.iter_mut().zip(&instance.fields) {
            // `attribute | constant` (nearly every field of Istio's instances) read in place.
            match field.expr.eval_inline(bag, &mut ()) {
                // The slot held a placeholder `Bool`: nothing to drop.
                Ok(value) => std::mem::forget(std::mem::replace(v, value)),
                Err(error) => {
                    instance_failed(report, self.fail_close, instance, &field.path, error);
                    return None;
                }
            }
        }
        let values = &*values;
        let cache = &self.stage.cache;
        let now = self.ctx.monotonic;
        let id = cache.id();
        let hit = match slot.as_deref() {
            Some(s) => s.hit(id, generation, values, now).is_some(),
            None => false,
        };
        if hit {
            if cache.used() {
                cache
                    .hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let kept: &'r Slot = slot?;
            return kept.output().map(Held::Slot);
        }
        self.produce_fresh(instance, values, report, slot, generation)
    }

    /// The stage's outputs when the thread's slot had none for these values: from the shared
    /// cache or the handler (kept out of line: repeats are the common case).
    #[inline(never)]
    fn produce_fresh<'r>(
        &self,
        instance: &CompiledInstance,
        values: &[Value<'_>],
        report: &mut ApaRunReport,
        slot: Option<&'r mut Slot>,
        generation: u64,
    ) -> Option<Held<'r>> {
        let cache = &self.stage.cache;
        let (id, now) = (cache.id(), self.ctx.monotonic);
        let lend = |expires, output| match slot {
            Some(s) if Slot::keeps(values) => {
                Held::Slot(s.keep(id, generation, values, expires, output))
            }
            _ => Held::Arc(output),
        };
        // Shared-cache keys are built only once the adapter has returned a cacheable answer.
        let mut shared_key = cache.used().then(|| cache.key(values));
        if let Some((out, expires)) = shared_key.as_ref().and_then(|k| cache.get(k, now)) {
            return Some(lend(Some(expires), out));
        }
        let view = InstanceView { instance, values };
        match self.producer.produce(&view, self.ctx) {
            Ok(p) => {
                let expires: Option<Option<MonoTime>> = match p.cache_for.filter(|d| !d.is_zero()) {
                    Some(d) => {
                        let k = shared_key.get_or_insert_with(|| cache.key(values));
                        let expires = now.plus(d);
                        cache.put(k, p.output.clone(), expires);
                        Some(Some(expires))
                    }
                    None => p.reusable.then_some(None),
                };
                Some(match expires {
                    Some(expires) => lend(expires, p.output),
                    None => Held::Arc(p.output),
                })
            }
            Err(status) => {
                report.fail(self.fail_close, status);
                None
            }
        }
    }
}
