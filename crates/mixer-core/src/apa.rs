//! Running the attribute-producing (APA) chain on a request.
//!
//! Each stage evaluates its instance over the ingested attributes plus what earlier stages
//! bound, and gets its outputs (`produce`): the thread's previous ones when the values are the
//! same (`reuse`), else the stage's shared cache ([`cache`]), else its handler; it keeps them
//! for the request. The transform then reads the request through a view over the ingested bag:
//! a bound attribute is evaluated from its stage's outputs each time it is read (bindings are
//! `$out.x | default`, cheaper than keeping a slot per binding), nothing is copied, and bound
//! values may borrow from the adapters' outputs.
//!
//! Every stage whose rule matches runs before the transform, in chain order, whether or not
//! its bindings are read: a fail-close handler's failure must deny the check before it runs,
//! the check cache is keyed on the produced attributes the transform reads, and the pipeline
//! counts handler failures from the run's report.
//!
//! The per-request state lives on the stack for chains of up to [`INLINE_STAGES`] stages and
//! instances of up to [`INLINE_FIELDS`] fields (no allocation by the chain itself).

pub mod cache;
mod produce;
mod reuse;

use std::cell::OnceCell;
use std::sync::Arc;

use mixer_attr::{AttrId, Bag, Value};

pub use self::cache::{ApaCache, KeyForm};
use self::produce::produce;
use self::reuse::Slot;
use crate::adapter::{ApaContext, ApaOutput};
use crate::snapshot::{ApaBinding, ApaStage, Snapshot};
use crate::status::Status;

/// Chains up to this many stages keep their per-request state on the stack.
pub const INLINE_STAGES: usize = 4;
/// Instances of up to this many fields are evaluated into a stack buffer.
pub const INLINE_FIELDS: usize = 8;

/// What one stage left for the request: its outputs and the view its bindings evaluate over,
/// set once the stage has produced (left empty when it was skipped or failed).
struct StageCell<'r> {
    bag: OnceCell<StageBag<'r>>,
}

impl StageCell<'_> {
    const fn new() -> Self {
        StageCell {
            bag: OnceCell::new(),
        }
    }
}

/// One request's run of the chain.
struct Run<'r> {
    snapshot: &'r Snapshot,
    input: &'r dyn Bag,
    cells: &'r [StageCell<'r>],
}

/// The request's attributes as stage `upto` sees them: bindings of stages before it over the
/// input. A binding is evaluated when its attribute is read, so a check that reads 2 of 21
/// bound attributes evaluates 2 bindings.
#[derive(Clone, Copy)]
struct ChainView<'r> {
    run: &'r Run<'r>,
    upto: usize,
}

impl<'r> ChainView<'r> {
    /// The stage view and binding producing `id` here, when a stage before `upto` binds it and
    /// produced outputs.
    #[inline]
    fn binding(&self, id: AttrId) -> Option<(&'r StageBag<'r>, &'r ApaBinding)> {
        let run = self.run;
        let chain = &run.snapshot.apa;
        let flat = chain.binding_of(id)?;
        let &(stage, index) = chain.bindings.get(flat)?;
        let stage = stage as usize;
        if stage >= self.upto {
            return None;
        }
        let bag = run.cells.get(stage)?.bag.get()?;
        let binding = chain.stages.get(stage)?.bindings.get(index as usize)?;
        Some((bag, binding))
    }

    /// The bound value of `id` visible here; `None` when no produced stage binds it or its
    /// binding failed to evaluate (the ingested value, if any, shows through).
    #[inline]
    fn bound(&self, id: AttrId) -> Option<Value<'r>> {
        let (bag, binding) = self.binding(id)?;
        if let Some(read) = &binding.direct {
            match bag.output.output().get(read.position) {
                Some(v) if v.value_type() == read.ty => return Some(v),
                None => {
                    if let Some(d) = &read.default {
                        return Some(d.reborrow());
                    }
                }
                Some(_) => {}
            }
        }
        interpret(bag, binding)
    }
}

/// A binding the direct read does not settle, through the interpreter (kept out of line: the
/// direct read is the common case).
#[cold]
#[inline(never)]
fn interpret<'r>(bag: &'r StageBag<'r>, binding: &'r ApaBinding) -> Option<Value<'r>> {
    binding.expr.eval(bag, &mut ()).ok()
}

impl Bag for ChainView<'_> {
    #[inline]
    fn get(&self, id: AttrId) -> Option<Value<'_>> {
        match self.bound(id) {
            Some(v) => Some(v),
            None => self.run.input.get(id),
        }
    }
    #[inline]
    fn get_stored(&self, id: AttrId) -> Option<Option<&Value<'_>>> {
        // Bound values are not stored: the reader calls `get` (which lets the ingested value
        // show through when the binding's stage did not produce).
        match self.run.snapshot.apa.binding_of(id) {
            Some(_) => None,
            None => self.run.input.get_stored(id),
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(AttrId, Value<'_>)) {
        let chain = &self.run.snapshot.apa;
        let mut seen: Vec<AttrId> = Vec::new();
        for &(stage, index) in &chain.bindings {
            let target = chain.stages[stage as usize].bindings[index as usize].target;
            if let Some(v) = self.bound(target) {
                seen.push(target);
                f(target, v);
            }
        }
        self.run.input.for_each(&mut |id, v| {
            if !seen.contains(&id) {
                f(id, v)
            }
        });
    }
}

/// A stage's outputs for one request: lent by the thread's slot for the stage, or held.
enum Held<'r> {
    Slot(&'r dyn ApaOutput),
    Arc(Arc<dyn ApaOutput>),
}

impl Held<'_> {
    #[inline]
    fn output(&self) -> &dyn ApaOutput {
        match self {
            Held::Slot(o) => *o,
            Held::Arc(a) => &**a,
        }
    }
}

/// What one stage's bindings read: its outputs as `$out.*` (ids from `base` on) over the
/// request as the stage saw it.
struct StageBag<'r> {
    output: Held<'r>,
    base: u32,
    view: ChainView<'r>,
}

impl Bag for StageBag<'_> {
    #[inline]
    fn get(&self, id: AttrId) -> Option<Value<'_>> {
        match id.0.checked_sub(self.base) {
            Some(pos) => self.output.output().get(pos as usize),
            None => self.view.get(id),
        }
    }
    #[inline]
    fn get_stored(&self, id: AttrId) -> Option<Option<&Value<'_>>> {
        if id.0 >= self.base {
            None
        } else {
            self.view.get_stored(id)
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(AttrId, Value<'_>)) {
        self.view.for_each(f)
    }
}

/// What running the chain did besides binding attributes.
#[derive(Debug, Default)]
pub(crate) struct ApaRunReport {
    /// The first failure of a fail-close handler: a check is denied with it.
    pub denial: Option<Status>,
    /// Handler failures (either policy).
    pub failures: u64,
    /// Instances or predicates that failed to evaluate.
    pub eval_errors: u64,
}

impl ApaRunReport {
    fn fail(&mut self, fail_close: bool, status: Status) {
        self.failures += 1;
        if fail_close && self.denial.is_none() {
            self.denial = Some(status);
        }
    }
}

/// Runs the chain of `snapshot` over `input` and calls `then` with the enriched bag.
pub(crate) fn with_enriched<R>(
    snapshot: &Snapshot,
    input: &dyn Bag,
    ctx: &ApaContext<'_>,
    then: impl FnOnce(&dyn Bag, ApaRunReport) -> R,
) -> R {
    let n = snapshot.apa.stages.len();
    reuse::with_slots(n, |slots| {
        if n <= INLINE_STAGES {
            let cells = [const { StageCell::new() }; INLINE_STAGES];
            let run = Run {
                snapshot,
                input,
                cells: &cells[..n],
            };
            run_chain(&run, slots, ctx, then)
        } else {
            let cells: Vec<StageCell<'_>> = (0..n).map(|_| StageCell::new()).collect();
            let run = Run {
                snapshot,
                input,
                cells: &cells,
            };
            run_chain(&run, slots, ctx, then)
        }
    })
}

fn run_chain<'r, R>(
    run: &'r Run<'r>,
    slots: Option<&'r mut [Slot]>,
    ctx: &ApaContext<'_>,
    then: impl FnOnce(&dyn Bag, ApaRunReport) -> R,
) -> R {
    let snapshot = run.snapshot;
    let chain = &snapshot.apa;
    let mut report = ApaRunReport::default();
    let mut slots = slots.map(|s| s.iter_mut());
    for ((i, stage), cell) in chain.stages.iter().enumerate().zip(run.cells) {
        // Slot `i` is stage `i`'s, whether or not the stage runs.
        let slot = slots.as_mut().and_then(Iterator::next);
        let view = ChainView { run, upto: i };
        // Stages reading nothing bound before them read the ingested attributes directly.
        let bag: &dyn Bag = if stage.reads_bound { &view } else { run.input };
        if !applies(stage, bag, &mut report) {
            continue;
        }
        if let Some(output) = produce(snapshot, stage, bag, ctx, &mut report, slot) {
            let _ = cell.bag.set(StageBag {
                output,
                base: chain.out_base,
                view,
            });
        }
    }
    let enriched = ChainView {
        run,
        upto: run.cells.len(),
    };
    then(&enriched, report)
}

#[inline]
fn applies(stage: &ApaStage, bag: &dyn Bag, report: &mut ApaRunReport) -> bool {
    let Some(predicates) = &stage.predicates else {
        return true;
    };
    predicates.iter().any(|p| match p.eval_bool(bag, &mut ()) {
        Ok(b) => b,
        Err(_) => {
            report.eval_errors += 1;
            false
        }
    })
}
