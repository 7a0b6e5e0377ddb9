//! A captured report: the attributes the report path reads (per the snapshot's
//! [`ReportPlan`]), copied off the host's buffers into a compact owned record.
//!
//! All strings (string values, captured map keys and values) go into one text arena; the record
//! keeps `(id, slot)` pairs whose slots index the arena. A STRING_MAP the host shares as an `Arc`
//! is kept by reference; one it lends is copied, only at the keys the report path reads when it
//! reads no other way ([`MapUse`]). Records are recycled by the queue, so a warm capture
//! allocates nothing. [`Record::with_bag`] shows the record as a [`Bag`] borrowing from it.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use mixer_attr::{
    AttrId, Attributes, Bag, Duration, StringMap, StringMapRef, StringMapView, Timestamp, Value,
};

use crate::report_keys::MapUse;
use crate::report_plan::ReportPlan;

/// Which string type a text slot holds.
#[derive(Clone, Copy, Debug)]
enum Text {
    String,
    Email,
    Uri,
    Dns,
}

/// One captured value.
#[derive(Debug)]
enum Slot {
    Text(Text, usize, usize),
    Int(i64),
    Double(f64),
    Bool(bool),
    Time(Timestamp),
    Ip(IpAddr),
    Dur(Duration),
    /// Entries `pairs[start..end]`.
    Map(usize, usize),
    Shared(Arc<StringMap>),
}

/// A captured report, owned.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// The plan (and snapshot) the report was captured under.
    pub(crate) plan: Option<Arc<ReportPlan>>,
    text: String,
    attrs: Vec<(AttrId, Slot)>,
    /// Map entries: key and value ranges in `text`.
    pairs: Vec<[usize; 4]>,
}

/// Records whose arena grew beyond this are not recycled (one huge request must not pin memory).
const RECYCLE_LIMIT: usize = 64 * 1024;

impl Record {
    /// Fills the record from `bag` per `plan` (clears it first).
    pub(crate) fn capture(&mut self, plan: &Arc<ReportPlan>, bag: &dyn Bag) {
        self.clear();
        self.plan = Some(plan.clone());
        if plan.snapshot.apa.is_empty() {
            // One pass over the request's attributes (tens), keeping those the report reads.
            bag.for_each(&mut |id, v| {
                if let Some(how) = plan.capture(id) {
                    self.push(bag, id, v, how);
                }
            });
        } else {
            // Attribute producers' bindings are evaluated when first read: read only these.
            for &id in plan.captured() {
                if let (Some(v), Some(how)) = (bag.get(id), plan.capture(id)) {
                    self.push(bag, id, v, how);
                }
            }
        }
    }

    fn text(&mut self, s: &str) -> (usize, usize) {
        let start = self.text.len();
        self.text.push_str(s);
        (start, self.text.len())
    }

    fn push(&mut self, bag: &dyn Bag, id: AttrId, v: Value<'_>, how: &MapUse) {
        let slot = match v {
            Value::String(s) => self.text_slot(Text::String, &s),
            Value::EmailAddress(s) => self.text_slot(Text::Email, &s),
            Value::Uri(s) => self.text_slot(Text::Uri, &s),
            Value::DnsName(s) => self.text_slot(Text::Dns, &s),
            Value::Int64(i) => Slot::Int(i),
            Value::Double(d) => Slot::Double(d),
            Value::Bool(b) => Slot::Bool(b),
            Value::Timestamp(t) => Slot::Time(t),
            Value::IpAddress(ip) => Slot::Ip(ip),
            Value::Duration(d) => Slot::Dur(d),
            Value::StringMap(m) => {
                // `for_each` lends maps; the stored value may be a shared one to keep as is.
                if let Some(Some(Value::StringMap(StringMapRef::Shared(a)))) = bag.get_stored(id) {
                    Slot::Shared(a.clone())
                } else {
                    let start = self.pairs.len();
                    let view = m.view();
                    match how {
                        MapUse::Keys(keys) => {
                            for k in keys.iter() {
                                if let Some(val) = view.get(k) {
                                    self.pair(k, val);
                                }
                            }
                        }
                        MapUse::Whole => view.for_each_entry(&mut |k, val| self.pair(k, val)),
                    }
                    Slot::Map(start, self.pairs.len())
                }
            }
        };
        self.attrs.push((id, slot));
    }

    fn text_slot(&mut self, kind: Text, s: &str) -> Slot {
        let (a, b) = self.text(s);
        Slot::Text(kind, a, b)
    }

    fn pair(&mut self, k: &str, v: &str) {
        let (ka, kb) = self.text(k);
        let (va, vb) = self.text(v);
        self.pairs.push([ka, kb, va, vb]);
    }

    /// Empties the record, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.plan = None;
        self.text.clear();
        self.attrs.clear();
        self.pairs.clear();
    }

    /// Whether the record is small enough to keep for reuse.
    pub(crate) fn reusable(&self) -> bool {
        self.text.capacity() <= RECYCLE_LIMIT && self.pairs.capacity() <= RECYCLE_LIMIT / 32
    }

    /// Calls `f` with the record seen as a bag (values borrow from the record).
    pub(crate) fn with_bag<R>(&self, f: impl FnOnce(&dyn Bag) -> R) -> R {
        let str_of = |a: usize, b: usize| self.text.get(a..b).unwrap_or_default();
        let maps: Vec<ArenaMap<'_>> = self
            .attrs
            .iter()
            .filter_map(|(_, s)| match s {
                Slot::Map(a, b) => Some(ArenaMap {
                    text: &self.text,
                    pairs: self.pairs.get(*a..*b).unwrap_or_default(),
                }),
                _ => None,
            })
            .collect();
        let mut maps_iter = maps.iter();
        let mut bag = Attributes::with_capacity(self.attrs.len());
        for (id, slot) in &self.attrs {
            let v = match slot {
                Slot::Text(kind, a, b) => {
                    let s = Cow::Borrowed(str_of(*a, *b));
                    match kind {
                        Text::String => Value::String(s),
                        Text::Email => Value::EmailAddress(s),
                        Text::Uri => Value::Uri(s),
                        Text::Dns => Value::DnsName(s),
                    }
                }
                Slot::Int(i) => Value::Int64(*i),
                Slot::Double(d) => Value::Double(*d),
                Slot::Bool(b) => Value::Bool(*b),
                Slot::Time(t) => Value::Timestamp(*t),
                Slot::Ip(ip) => Value::IpAddress(*ip),
                Slot::Dur(d) => Value::Duration(*d),
                Slot::Map(..) => match maps_iter.next() {
                    Some(m) => Value::StringMap(StringMapRef::Borrowed(m)),
                    None => continue,
                },
                Slot::Shared(m) => Value::StringMap(StringMapRef::Borrowed(&**m)),
            };
            bag.set(*id, v);
        }
        f(&bag)
    }
}

/// A captured map's entries in the record's arena.
struct ArenaMap<'r> {
    text: &'r str,
    pairs: &'r [[usize; 4]],
}

impl ArenaMap<'_> {
    fn at(&self, a: usize, b: usize) -> &str {
        self.text.get(a..b).unwrap_or_default()
    }
}

impl StringMapView for ArenaMap<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|[ka, kb, _, _]| self.at(*ka, *kb) == key)
            .map(|[_, _, va, vb]| self.at(*va, *vb))
    }
    fn len(&self) -> usize {
        self.pairs.len()
    }
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        for [ka, kb, va, vb] in self.pairs {
            f(self.at(*ka, *kb), self.at(*va, *vb));
        }
    }
}
