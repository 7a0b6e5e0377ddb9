//! The compiled matcher: every operation's template in one segment trie, so the cost of a match
//! depends on the path's depth and not on the number of templates.
//!
//! Each node has literal children (a hash map), one single-segment child (`*`, `{name}`) and an
//! end-of-template leaf for `**` (the rest). Matching tries, at each depth, the literal child,
//! then the single-segment child, then the rest leaf, and backtracks when a branch finds no
//! operation: literal > variable > wildcard, segment by segment from the left (for `/a/b/d`,
//! `/a/**` wins over `/{y}/b/d`, and `/{y}/b/d` is found when nothing under `/a` fits). A node
//! sits at one depth, so a match visits each node at most once. The method is
//! checked at the leaf (an exact method before `*`, case-insensitively); a leaf with no operation
//! for the request's method lets the search go on.
//!
//! Requests are normalized like templates: the path must start with `/`, one trailing `/` is
//! dropped (`/shelves/` matches `/shelves`), and literal segments are compared percent-decoded.

use std::collections::HashMap;

use crate::decode::decode;
use crate::template::{PathTemplate, Segment};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Where a named variable's value comes from in a matched path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub name: Box<str>,
    /// Index of the segment (0 = the first after the leading `/`).
    pub segment: usize,
    /// True for `{name=**}`: the segment and everything after it.
    pub rest: bool,
}

/// One operation of the matcher.
#[derive(Clone, Debug)]
pub struct Operation {
    pub name: Box<str>,
    /// Upper-case method, or `None` for any method.
    pub method: Option<Box<str>>,
    /// The template as written.
    pub template: Box<str>,
    pub captures: Vec<Capture>,
}

/// Two operations with the same method and template shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{existing}` already has {method} {shape}: the match would be ambiguous")]
pub struct Ambiguous {
    /// The operation configured first.
    pub existing: String,
    pub method: String,
    pub shape: String,
}

#[derive(Debug, Default)]
struct Leaf {
    /// `(METHOD, operation)` for operations of one method.
    methods: Vec<(Box<str>, u32)>,
    /// The operation for any method.
    any: Option<u32>,
}

impl Leaf {
    fn pick(&self, method: &str) -> Option<u32> {
        self.methods
            .iter()
            .find(|(m, _)| m.eq_ignore_ascii_case(method))
            .map(|(_, op)| *op)
            .or(self.any)
    }
}

#[derive(Debug, Default)]
struct Node {
    literals: Map<Box<str>, Node>,
    single: Option<Box<Node>>,
    /// Templates ending with `**` here.
    rest: Option<Leaf>,
    /// Templates ending here.
    end: Option<Leaf>,
}

/// Every configured template, compiled.
#[derive(Debug, Default)]
pub struct Matcher {
    root: Node,
    operations: Vec<Operation>,
}

/// The remaining path after the leading `/`, without one trailing `/`; `None` for no segments.
fn normalize(path: &str) -> Option<Option<&str>> {
    let body = path.strip_prefix('/')?;
    let body = body.strip_suffix('/').unwrap_or(body);
    Some((!body.is_empty()).then_some(body))
}

#[inline]
fn next_segment(p: &str) -> (&str, Option<&str>) {
    // Segments are short: a plain scan beats memchr's setup.
    match p.bytes().position(|b| b == b'/') {
        Some(i) => (
            p.get(..i).unwrap_or_default(),
            Some(p.get(i + 1..).unwrap_or_default()),
        ),
        None => (p, None),
    }
}

impl Matcher {
    /// An empty matcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// True when no operation is configured.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Operation `index` (as returned by [`Matcher::find`]).
    pub fn operation(&self, index: u32) -> Option<&Operation> {
        self.operations.get(index as usize)
    }

    /// Adds operation `name` for `method` (`None`: any method; compared case-insensitively)
    /// and `template`; `text` is the template as written. Returns the operation's index.
    pub fn insert(
        &mut self,
        name: &str,
        method: Option<&str>,
        template: &PathTemplate,
        text: &str,
    ) -> Result<u32, Ambiguous> {
        let method = method.map(str::to_ascii_uppercase);
        let index = self.operations.len() as u32;
        let mut node = &mut self.root;
        let mut captures = Vec::new();
        let mut leaf = None;
        for (i, seg) in template.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => node = node.literals.entry(l.as_str().into()).or_default(),
                Segment::Single(name) => {
                    if let Some(n) = name {
                        captures.push(Capture {
                            name: n.as_str().into(),
                            segment: i,
                            rest: false,
                        });
                    }
                    node = node.single.get_or_insert_with(Box::default);
                }
                Segment::Rest(name) => {
                    if let Some(n) = name {
                        captures.push(Capture {
                            name: n.as_str().into(),
                            segment: i,
                            rest: true,
                        });
                    }
                    leaf = Some(node.rest.get_or_insert_with(Leaf::default));
                    break;
                }
            }
        }
        let leaf = match leaf {
            Some(l) => l,
            None => node.end.get_or_insert_with(Leaf::default),
        };
        let existing = match method.as_deref() {
            None => leaf.any,
            Some(m) => leaf
                .methods
                .iter()
                .find(|(x, _)| &**x == m)
                .map(|(_, op)| *op),
        };
        if let Some(op) = existing {
            let existing = self.operations.get(op as usize).map(|o| o.name.to_string());
            return Err(Ambiguous {
                existing: existing.unwrap_or_default(),
                method: method.unwrap_or_else(|| "*".to_string()),
                shape: template.shape(),
            });
        }
        match method.as_deref() {
            None => leaf.any = Some(index),
            Some(m) => leaf.methods.push((m.into(), index)),
        }
        self.operations.push(Operation {
            name: name.into(),
            method: method.map(String::into_boxed_str),
            template: text.into(),
            captures,
        });
        Ok(index)
    }

    /// The operation for `method` and `path` (the path only, without the query string).
    pub fn find(&self, method: &str, path: &str) -> Option<u32> {
        self.find_scanned(method, path, path.contains('%'))
    }

    /// [`Matcher::find`] for a path known to have escapes (`%`) or not: most have none, and
    /// their segments are compared as they are.
    pub(crate) fn find_scanned(&self, method: &str, path: &str, escaped: bool) -> Option<u32> {
        let rest = normalize(path)?;
        walk(&self.root, rest, method, escaped)
    }
}

fn walk(node: &Node, rest: Option<&str>, method: &str, escaped: bool) -> Option<u32> {
    let Some(p) = rest else {
        let end = node.end.as_ref().and_then(|l| l.pick(method));
        return end.or_else(|| node.rest.as_ref().and_then(|l| l.pick(method)));
    };
    let (seg, tail) = next_segment(p);
    if !node.literals.is_empty()
        && let Some(child) = match escaped {
            false => node.literals.get(seg),
            true => node.literals.get(&*decode(seg, false)),
        }
        && let Some(op) = walk(child, tail, method, escaped)
    {
        return Some(op);
    }
    if !seg.is_empty()
        && let Some(child) = &node.single
        && let Some(op) = walk(child, tail, method, escaped)
    {
        return Some(op);
    }
    node.rest.as_ref().and_then(|l| l.pick(method))
}

/// The raw (still encoded) value of `capture` in `path`, a path that matched its operation.
pub fn captured<'p>(path: &'p str, capture: &Capture) -> Option<&'p str> {
    let mut from = normalize(path)?.unwrap_or("");
    for _ in 0..capture.segment {
        match from.split_once('/') {
            Some((_, tail)) => from = tail,
            // `{name=**}` matching zero segments.
            None => return capture.rest.then_some(""),
        }
    }
    Some(if capture.rest {
        from
    } else {
        next_segment(from).0
    })
}
