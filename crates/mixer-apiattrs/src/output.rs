//! What `produce()` hands back: the matched operation's identity, borrowed from the compiled
//! handler (one `Arc` clone, no string copies), and the two parameter maps, each one string
//! buffer plus a sorted index of `(key, value)` ranges into it, decoded when first read.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use mixer_attr::{StringMapRef, StringMapView, Value};
use mixer_core::adapter::ApaOutput;
use mixer_core::template::TemplateInfo;
use smallvec::SmallVec;

use crate::decode::decode_into;
use crate::trie::{Matcher, captured};

/// Which output a position of the template's `outputs` list is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Service,
    Version,
    Operation,
    Protocol,
    PathParams,
    QueryParams,
    /// An output this adapter does not know (always absent).
    Unknown,
}

impl Slot {
    /// The slot of every output of `template`, by position.
    pub(crate) fn of(template: &TemplateInfo) -> Vec<Slot> {
        template
            .outputs
            .iter()
            .map(|f| match f.path {
                "api_service" => Slot::Service,
                "api_version" => Slot::Version,
                "api_operation" => Slot::Operation,
                "api_protocol" => Slot::Protocol,
                "path_params" => Slot::PathParams,
                "query_params" => Slot::QueryParams,
                _ => Slot::Unknown,
            })
            .collect()
    }
}

/// A handler's configuration, compiled; shared by every output it produces.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub service: Option<Box<str>>,
    pub version: Option<Box<str>>,
    pub protocol: Box<str>,
    pub matcher: Matcher,
    pub slots: Vec<Slot>,
}

/// A string map decoded from the request: keys and values in one buffer, entries sorted by
/// key, the first of duplicate keys kept.
#[derive(Debug, Default)]
pub struct ParamMap {
    buf: String,
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl ParamMap {
    fn key(&self, e: &(Range<usize>, Range<usize>)) -> &str {
        self.buf.get(e.0.clone()).unwrap_or_default()
    }

    fn value(&self, e: &(Range<usize>, Range<usize>)) -> &str {
        self.buf.get(e.1.clone()).unwrap_or_default()
    }

    /// Adds `key` = decoded `raw`.
    fn push(&mut self, key: &str, raw: &str, plus_as_space: bool) {
        let k = self.buf.len();
        self.buf.push_str(key);
        let v = self.buf.len();
        decode_into(&mut self.buf, raw, plus_as_space);
        self.entries.push((k..v, v..self.buf.len()));
    }

    /// Adds decoded `raw_key` = decoded `raw`.
    fn push_decoded(&mut self, raw_key: &str, raw: &str, plus_as_space: bool) {
        let k = self.buf.len();
        decode_into(&mut self.buf, raw_key, plus_as_space);
        let v = self.buf.len();
        decode_into(&mut self.buf, raw, plus_as_space);
        self.entries.push((k..v, v..self.buf.len()));
    }

    /// Sorts the entries by key (stable: the first of equal keys comes first) and drops the
    /// later duplicates.
    fn finish(&mut self) {
        let buf = &self.buf;
        let key = |e: &(Range<usize>, Range<usize>)| buf.get(e.0.clone()).unwrap_or_default();
        self.entries.sort_by(|a, b| key(a).cmp(key(b)));
        self.entries
            .dedup_by(|later, earlier| key(later) == key(earlier));
    }

    /// The path parameters of operation `op` in `path` (percent-decoded).
    pub(crate) fn path_params(matcher: &Matcher, op: u32, path: &str) -> ParamMap {
        let mut map = ParamMap::default();
        if let Some(operation) = matcher.operation(op) {
            if operation.captures.is_empty() {
                return map;
            }
            map.buf.reserve(path.len());
            map.entries.reserve_exact(operation.captures.len());
            for c in &operation.captures {
                if let Some(raw) = captured(path, c) {
                    map.push(&c.name, raw, false);
                }
            }
        }
        map.finish();
        map
    }

    /// The parameters of query string `query` (`a=1&b=x%20y`; `+` is a space; a parameter
    /// without `=` has the empty value; empty names are skipped; the first of repeated names
    /// wins).
    pub fn query(query: &str) -> ParamMap {
        let mut map = ParamMap::default();
        if query.is_empty() {
            return map;
        }
        map.buf.reserve(query.len());
        map.entries
            .reserve_exact(query.bytes().filter(|b| *b == b'&').count() + 1);
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !k.is_empty() {
                map.push_decoded(k, v, true);
            }
        }
        map.finish();
        map
    }
}

impl StringMapView for ParamMap {
    fn get(&self, key: &str) -> Option<&str> {
        let i = self
            .entries
            .binary_search_by(|e| self.key(e).cmp(key))
            .ok()?;
        self.entries.get(i).map(|e| self.value(e))
    }
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        for e in &self.entries {
            f(self.key(e), self.value(e))
        }
    }
}

/// Path and query bytes kept in the output itself: longer ones take a second allocation.
const RAW_INLINE: usize = 96;

/// The outputs for one request. Without an operation (no template matched) only service,
/// version and protocol are present. The parameter maps are decoded from `raw` the first time
/// they are read (most configs bind neither).
#[derive(Debug)]
pub(crate) struct Output {
    pub compiled: Arc<Compiled>,
    pub operation: Option<u32>,
    /// The request's path (when the operation captures variables) followed by its query
    /// string (without `?`): in the output's own allocation when short.
    raw: SmallVec<[u8; RAW_INLINE]>,
    /// Where the query string starts in `raw`.
    split: usize,
    path_params: OnceLock<ParamMap>,
    query_params: OnceLock<ParamMap>,
}

impl Output {
    /// The outputs of `operation` (`None`: nothing matched) for a request with `path` and
    /// `query`; the path is kept only when the operation captures variables.
    pub(crate) fn new(
        compiled: Arc<Compiled>,
        operation: Option<u32>,
        path: &str,
        query: &str,
    ) -> Output {
        let captures = operation
            .and_then(|op| compiled.matcher.operation(op))
            .is_some_and(|o| !o.captures.is_empty());
        let path = if captures { path } else { "" };
        let mut raw = SmallVec::with_capacity(path.len() + query.len());
        raw.extend_from_slice(path.as_bytes());
        raw.extend_from_slice(query.as_bytes());
        Output {
            compiled,
            operation,
            raw,
            split: path.len(),
            path_params: OnceLock::new(),
            query_params: OnceLock::new(),
        }
    }

    /// Part of `raw` (split where a `&str` ended: always UTF-8).
    fn raw_text(&self, range: impl std::slice::SliceIndex<[u8], Output = [u8]>) -> &str {
        std::str::from_utf8(self.raw.get(range).unwrap_or_default()).unwrap_or_default()
    }

    fn path_params(&self, op: u32) -> &ParamMap {
        self.path_params.get_or_init(|| {
            let path = self.raw_text(..self.split);
            ParamMap::path_params(&self.compiled.matcher, op, path)
        })
    }

    fn query_params(&self) -> &ParamMap {
        self.query_params
            .get_or_init(|| ParamMap::query(self.raw_text(self.split..)))
    }
}

impl ApaOutput for Output {
    fn get(&self, position: usize) -> Option<Value<'_>> {
        let c = &*self.compiled;
        match c.slots.get(position)? {
            Slot::Service => c.service.as_deref().map(Value::str),
            Slot::Version => c.version.as_deref().map(Value::str),
            Slot::Protocol => Some(Value::str(&c.protocol)),
            Slot::Operation => {
                let op = c.matcher.operation(self.operation?)?;
                Some(Value::str(&op.name))
            }
            Slot::PathParams => {
                let map = self.path_params(self.operation?);
                Some(Value::StringMap(StringMapRef::Borrowed(map)))
            }
            Slot::QueryParams => {
                self.operation?;
                Some(Value::StringMap(StringMapRef::Borrowed(
                    self.query_params(),
                )))
            }
            Slot::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_decode_and_keep_the_first_duplicate() {
        let m = ParamMap::query("b=x%20y&a=1&flag&=skipped&a=2&c=1+2&d%5B%5D=z");
        assert_eq!(m.get("a"), Some("1"));
        assert_eq!(m.get("b"), Some("x y"));
        assert_eq!(m.get("c"), Some("1 2"));
        assert_eq!(m.get("flag"), Some(""));
        assert_eq!(m.get("d[]"), Some("z"));
        assert_eq!(m.get(""), None);
        assert_eq!(StringMapView::len(&m), 5);
        let mut keys = Vec::new();
        m.for_each_entry(&mut |k, _| keys.push(k.to_string()));
        assert_eq!(keys, ["a", "b", "c", "d[]", "flag"]);
        assert!(ParamMap::query("").is_empty());
    }
}
