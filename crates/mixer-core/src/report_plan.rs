//! The report path of one snapshot, compiled at config time: every distinct instance-field
//! expression of the report instances in one table (common-subexpression elimination), and the
//! attributes the report path reads (what a deferred report captures, see
//! [`report_queue`](crate::report_queue)).
//!
//! Expressions with the same source text and result type (one vocabulary per snapshot) share a
//! slot: Istio's HTTP metrics repeat the same twenty dimensions, so the 233 fields of the Istio
//! 1.4 default config's report instances are 72 distinct expressions. A report first selects the
//! actions it sends (rule match, then sampling, in config order, as before), then builds their
//! instances field by field: a slot's first use in the request evaluates it, later uses copy its
//! value; every handler gets views of those values. [`CompiledInstance::evaluate`] is unchanged
//! (check, quota and mutation still evaluate instance by instance).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mixer_attr::{AttrId, Bag, Value, ValueType};
use mixer_expr::Expression;

use crate::dispatch::LogSink;
use crate::instance::{CompiledInstance, InstanceView};
use crate::pipeline::{Candidates, PipelineStats, ReportSummary, rule_matches};
use crate::report_keys::{MapUse, map_uses};
use crate::snapshot::{CompiledAction, Snapshot};

/// A slot not evaluated yet in this request.
const UNSEEN: u32 = u32::MAX;
/// A slot whose evaluation failed in this request.
const FAILED: u32 = u32::MAX - 1;

/// Sizes of a snapshot's report path ([`Pipeline::report_plan_shape`](crate::Pipeline)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportPlanShape {
    /// Distinct expressions evaluated (at most once each per report).
    pub expressions: usize,
    /// Fields of the instances report actions send (each a reference to one expression).
    pub fields: usize,
    /// Attributes a deferred report captures.
    pub captured_attributes: usize,
}

/// The report path of one snapshot.
pub(crate) struct ReportPlan {
    pub(crate) snapshot: Arc<Snapshot>,
    /// One expression per distinct (source, type) among report instances' fields.
    exprs: Vec<Expression>,
    /// Per snapshot instance (by index): the table slot of each field, in field order. Empty for
    /// instances no report action sends.
    slots: Vec<Box<[u32]>>,
    /// Attributes a deferred report copies, by id: `None` not read, `Some(use)` read (for
    /// STRING_MAP attributes, whether whole or only at constant keys).
    capture: Vec<Option<MapUse>>,
    /// The ids `capture` holds, ascending.
    captured: Box<[AttrId]>,
    /// Whether any rule has a report action.
    reports: bool,
    /// The snapshot's dispatch log sink (drop notices).
    pub(crate) log: LogSink,
}

impl fmt::Debug for ReportPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportPlan")
            .field("expressions", &self.exprs.len())
            .field(
                "captured",
                &self.capture.iter().filter(|c| c.is_some()).count(),
            )
            .finish_non_exhaustive()
    }
}

impl ReportPlan {
    /// Compiles the report path of `snapshot`.
    pub(crate) fn new(snapshot: Arc<Snapshot>) -> ReportPlan {
        let mut used = vec![false; snapshot.instances.len()];
        let mut reports = false;
        // Every expression the report path evaluates: predicates of rules with report actions
        // and the fields of the instances they send.
        let mut read: Vec<&Expression> = Vec::new();
        let mut scoped = false;
        for rule in snapshot
            .rules
            .iter()
            .filter(|r| !r.report_actions.is_empty())
        {
            reports = true;
            read.extend(rule.predicate.iter());
            scoped |= rule.namespace_scope.is_some();
            for &i in rule.report_actions.iter().flat_map(|a| &a.instances) {
                if let Some(u) = used.get_mut(i) {
                    *u = true;
                }
            }
        }
        let mut table: HashMap<(&str, ValueType), u32> = HashMap::new();
        let mut exprs = Vec::new();
        let mut slots = Vec::with_capacity(used.len());
        for (instance, used) in snapshot.instances.iter().zip(&used) {
            if !*used {
                slots.push(Box::default());
                continue;
            }
            let s: Box<[u32]> = instance
                .fields
                .iter()
                .map(|f| {
                    *table
                        .entry((f.expr.source(), f.expr.result_type()))
                        .or_insert_with(|| {
                            exprs.push(f.expr.clone());
                            u32::try_from(exprs.len() - 1).unwrap_or(u32::MAX)
                        })
                })
                .collect();
            slots.push(s);
        }
        drop(table);
        read.extend(exprs.iter());
        let mut capture = vec![None; snapshot.vocabulary.len()];
        let uses = map_uses(&read, &snapshot.vocabulary);
        for e in &read {
            for id in e.attributes() {
                if let Some(c) = capture.get_mut(id.index()) {
                    *c = Some(uses.get(id).cloned().unwrap_or(MapUse::Whole));
                }
            }
        }
        if scoped
            && let Some(c) = snapshot
                .destination_namespace
                .and_then(|id| capture.get_mut(id.index()))
        {
            *c = Some(MapUse::Whole);
        }
        let captured = capture
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .filter_map(|(i, _)| u32::try_from(i).ok().map(AttrId))
            .collect();
        let log = snapshot
            .handlers
            .first()
            .map(|h| h.report_dispatch.log().clone())
            .unwrap_or_default();
        ReportPlan {
            snapshot,
            exprs,
            slots,
            capture,
            captured,
            reports,
            log,
        }
    }

    /// Whether any rule sends report instances (otherwise a report does nothing).
    pub(crate) fn has_reports(&self) -> bool {
        self.reports
    }

    /// Whether a deferred report copies attribute `id`, and how (maps).
    #[inline]
    pub(crate) fn capture(&self, id: AttrId) -> Option<&MapUse> {
        self.capture.get(id.index()).and_then(Option::as_ref)
    }

    /// Every attribute a deferred report copies, ascending.
    pub(crate) fn captured(&self) -> &[AttrId] {
        &self.captured
    }

    /// Sizes of the plan (for tests, benches and `config show`).
    pub(crate) fn shape(&self) -> ReportPlanShape {
        ReportPlanShape {
            expressions: self.exprs.len(),
            fields: self.slots.iter().map(|s| s.len()).sum(),
            captured_attributes: self.captured.len(),
        }
    }

    /// Evaluates and dispatches the report of the request in `bag` (rule match, sampling,
    /// instances, dispatch), as [`Worker::report`](crate::Worker::report) does inline.
    pub(crate) fn run(&self, bag: &dyn Bag, stats: &PipelineStats) -> ReportSummary {
        let snapshot = &*self.snapshot;
        stats.reports.fetch_add(1, Ordering::Relaxed);
        let mut summary = ReportSummary::default();
        // 1. The actions sent: matching rules in config order; sampling decides before any
        //    instance is built.
        let mut sends: Vec<&CompiledAction> = Vec::new();
        {
            let candidates = Candidates::of(snapshot, bag, &mut ());
            for rule in candidates.rules(snapshot) {
                if rule.report_actions.is_empty()
                    || !rule_matches(snapshot, rule, bag, &mut (), stats)
                {
                    continue;
                }
                for action in &rule.report_actions {
                    let Some(entry) = snapshot.handlers.get(action.handler) else {
                        continue;
                    };
                    if entry.handler.as_report().is_some()
                        && entry.report_dispatch.sample(action.instances.len())
                    {
                        sends.push(action);
                    }
                }
            }
        }
        if sends.is_empty() {
            return summary;
        }
        // 2. Instance values, field by field: a slot's first use evaluates it into `values`,
        //    later uses copy that value. An instance with a failed field is skipped (its partial
        //    values stay where they are: later fields may copy from them).
        let fields: usize = sends
            .iter()
            .flat_map(|a| &a.instances)
            .map(|&i| self.slots_of(i).len())
            .sum();
        let mut values: Vec<Value<'_>> = Vec::with_capacity(fields);
        let mut first = vec![UNSEEN; self.exprs.len()];
        let mut built: Vec<(&CompiledInstance, Range<usize>)> = Vec::new();
        let mut ends = Vec::with_capacity(sends.len());
        for action in &sends {
            for &i in &action.instances {
                let start = values.len();
                let ok = self.slots_of(i).iter().all(|&s| {
                    let Some(at) = first.get_mut(s as usize) else {
                        return false;
                    };
                    match *at {
                        UNSEEN => match self.exprs.get(s as usize).map(|e| e.eval(bag, &mut ())) {
                            Some(Ok(v)) => {
                                *at = u32::try_from(values.len()).unwrap_or(FAILED);
                                values.push(v);
                                true
                            }
                            _ => {
                                *at = FAILED;
                                false
                            }
                        },
                        FAILED => false,
                        k if (k as usize) < values.len() => {
                            values.extend_from_within(k as usize..k as usize + 1);
                            true
                        }
                        _ => false,
                    }
                });
                match snapshot.instances.get(i) {
                    Some(instance) if ok => built.push((instance, start..values.len())),
                    _ => {
                        summary.instance_errors += 1;
                        stats.instance_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            ends.push(built.len());
        }
        let views: Vec<InstanceView<'_>> = built
            .iter()
            .map(|(instance, r)| InstanceView {
                instance,
                values: values.get(r.clone()).unwrap_or_default(),
            })
            .collect();
        // 3. Dispatch, action by action.
        let mut start = 0;
        for (action, &end) in sends.iter().zip(&ends) {
            let batch = views.get(start..end).unwrap_or_default();
            start = end;
            let Some(entry) = snapshot.handlers.get(action.handler) else {
                continue;
            };
            let Some(handler) = entry.handler.as_report() else {
                continue;
            };
            if !batch.is_empty() {
                summary.instances_sent += batch.len();
                stats
                    .report_instances
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                entry.report_dispatch.dispatch(handler, batch);
            }
        }
        summary
    }

    #[inline]
    fn slots_of(&self, instance: usize) -> &[u32] {
        self.slots.get(instance).map_or(&[], |s| s)
    }
}
