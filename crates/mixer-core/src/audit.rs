//! Audit: a structured record of every check decision (who asked for what, which rule and
//! handler decided, the result), written to a sink the host provides.

use std::sync::Arc;

use mixer_attr::{Bag, Timestamp, Value, Vocabulary};
use parking_lot::Mutex;

use crate::decision::{Decision, Denial};
use crate::status::Status;

/// One audited decision.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub time: Timestamp,
    /// The caller: `source.principal`, else `source.user`, else `source.workload.name`, else
    /// `source.ip`.
    pub who: String,
    /// The target: `destination.service.host` (or `.name`), `request.method` and `request.path`.
    pub what: String,
    pub status: Status,
    /// Which rules and handlers denied (experimental ones included, marked).
    pub denials: Vec<Denial>,
    pub cache_hit: bool,
}

/// Where audit records go. Called on the worker thread; keep it cheap (queue, don't write).
pub trait AuditSink: Send + Sync {
    fn record(&self, record: AuditRecord);
}

/// Keeps records in memory (tests, the CLI).
#[derive(Debug, Default)]
pub struct MemoryAudit {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAudit {
    /// Every record so far.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records.lock().clone()
    }
}

impl AuditSink for MemoryAudit {
    fn record(&self, record: AuditRecord) {
        self.records.lock().push(record);
    }
}

/// The request-side facts of a record, taken while the request's attributes are available.
#[derive(Clone, Debug)]
pub(crate) struct AuditSubject {
    who: String,
    what: String,
    time: Timestamp,
}

fn first(bag: &dyn Bag, vocab: &Vocabulary, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        let v = bag.get(vocab.lookup(n)?)?;
        match v {
            Value::StringMap(_) => None,
            other => Some(other.to_string()),
        }
    })
}

impl AuditSubject {
    pub(crate) fn of(bag: &dyn Bag, vocab: &Vocabulary, time: Timestamp) -> AuditSubject {
        let who = first(
            bag,
            vocab,
            &[
                "source.principal",
                "source.user",
                "source.workload.name",
                "source.ip",
            ],
        )
        .unwrap_or_else(|| "unknown".to_string());
        let target = first(
            bag,
            vocab,
            &[
                "destination.service.host",
                "destination.service.name",
                "destination.workload.name",
            ],
        )
        .unwrap_or_else(|| "unknown".to_string());
        let method = first(bag, vocab, &["request.method"]).unwrap_or_default();
        let path = first(bag, vocab, &["request.path"]).unwrap_or_default();
        let what = [target, method, path]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        AuditSubject { who, what, time }
    }

    pub(crate) fn emit(self, sink: &Arc<dyn AuditSink>, decision: &Decision, cache_hit: bool) {
        sink.record(AuditRecord {
            time: self.time,
            who: self.who,
            what: self.what,
            status: decision.status.clone(),
            denials: decision.denials.clone(),
            cache_hit,
        });
    }
}
