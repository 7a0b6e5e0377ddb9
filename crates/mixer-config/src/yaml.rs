//! A bounded YAML reader: the parser's events folded into a small tree whose every node knows its
//! line and column. Aliases are expanded here (against a node budget, so an alias bomb stops
//! early), merge keys (`<<`) are applied, and nesting deeper than the limit is refused before it
//! is built.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::Limits;

/// A position in a source file: 1-based line and column (columns count characters), and the
/// character offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
    pub offset: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        Pos {
            line: u32::try_from(m.line()).unwrap_or(u32::MAX),
            col: u32::try_from(m.col()).unwrap_or(u32::MAX).saturating_add(1),
            offset: m.index(),
        }
    }
}

/// How a scalar was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Unquoted: typed by the YAML 1.2 core schema (null, bool, int, float, else string).
    Plain,
    /// `'...'`
    SingleQuoted,
    /// `"..."`
    DoubleQuoted,
    /// `|` or `>`
    Block,
}

/// A node's content.
#[derive(Clone, Debug)]
pub enum Value {
    Scalar {
        text: String,
        style: Style,
        /// Tagged `!!str`: a string whatever it looks like.
        forced_string: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A YAML node with its position.
#[derive(Clone, Debug)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
    /// Nodes in this subtree (this one included).
    pub(crate) size: usize,
    /// Levels of collections in this subtree (0 for a scalar).
    pub(crate) height: usize,
}

impl Node {
    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for an explicit or implicit null (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, style: Style::Plain, forced_string: false }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What the node is, for messages: `a string`, `a list`, `a mapping`.
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "nothing (null)",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// One document of a YAML stream.
#[derive(Debug)]
pub struct Document {
    /// 1-based index of the document in its file.
    pub index: usize,
    /// Its root node (`None` for an empty document).
    pub root: Option<Node>,
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    /// 1-based index of the document it is in.
    pub document: usize,
    pub message: String,
}

/// What [`parse`] read: the complete documents, and the errors found. A syntax error or an
/// exceeded limit ends reading (documents before it are kept); a duplicate key does not.
#[derive(Debug, Default)]
pub struct Parsed {
    pub documents: Vec<Document>,
    pub errors: Vec<YamlError>,
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

struct Builder<'l> {
    limits: &'l Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    document: usize,
    root: Option<Node>,
    errors: Vec<YamlError>,
}

type Fatal = YamlError;

impl Builder<'_> {
    fn fatal(&self, pos: Pos, message: impl Into<String>) -> Fatal {
        YamlError {
            pos,
            document: self.document.max(1),
            message: message.into(),
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), Fatal> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return Err(self.fatal(
                pos,
                format!(
                    "too many YAML nodes (over {}; aliases count once per use)",
                    self.limits.max_nodes
                ),
            ));
        }
        Ok(())
    }

    fn open(&mut self, pos: Pos) -> Result<(), Fatal> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.fatal(
                pos,
                format!("nested deeper than {} levels", self.limits.max_depth),
            ));
        }
        self.count(1, pos)
    }

    /// Adds a finished node to its parent (or makes it the document's root).
    fn push(&mut self, node: Node, anchor: usize) -> Result<(), Fatal> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if !matches!(node.value, Value::Scalar { .. }) {
                        return Err(self.fatal(
                            node.pos,
                            "a mapping key must be a plain value, not a list or mapping",
                        ));
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event, pos: Pos) -> Result<(), Fatal> {
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart => {
                self.document += 1;
                if self.document > self.limits.max_documents {
                    return Err(self.fatal(
                        pos,
                        format!("more than {} documents", self.limits.max_documents),
                    ));
                }
                self.root = None;
                self.anchors.clear();
            }
            Event::DocumentEnd => {}
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(self.fatal(pos, "alias to an anchor that is not defined before it"));
                };
                let (size, height) = (target.size, target.height);
                if self.stack.len() + height > self.limits.max_depth {
                    return Err(self.fatal(
                        pos,
                        format!(
                            "nested deeper than {} levels (through an alias)",
                            self.limits.max_depth
                        ),
                    ));
                }
                self.count(size, pos)?;
                let Some(mut node) = self.anchors.get(&id).cloned() else {
                    return Err(self.fatal(pos, "alias to an anchor that is not defined before it"));
                };
                node.pos = pos;
                self.push(node, 0)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, pos)?;
                let style = match style {
                    TScalarStyle::Plain => Style::Plain,
                    TScalarStyle::SingleQuoted => Style::SingleQuoted,
                    TScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    TScalarStyle::Literal | TScalarStyle::Folded => Style::Block,
                };
                let forced_string = tag.as_ref().is_some_and(is_str_tag);
                let node = Node {
                    pos,
                    value: Value::Scalar {
                        text,
                        style,
                        forced_string,
                    },
                    size: 1,
                    height: 0,
                };
                self.push(node, anchor)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.open(pos)?;
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                self.open(pos)?;
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd => {
                let Some(Frame::Seq { pos, anchor, items }) = self.stack.pop() else {
                    return Err(self.fatal(pos, "unbalanced sequence end"));
                };
                let pos = match items.first() {
                    Some(first) if (first.pos.line, first.pos.col) < (pos.line, pos.col) => {
                        first.pos
                    }
                    _ => pos,
                };
                let size = 1 + items.iter().map(|n| n.size).sum::<usize>();
                let height = 1 + items.iter().map(|n| n.height).max().unwrap_or(0);
                self.push(
                    Node {
                        pos,
                        value: Value::Seq(items),
                        size,
                        height,
                    },
                    anchor,
                )?;
            }
            Event::MappingEnd => {
                let Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                else {
                    return Err(self.fatal(pos, "unbalanced mapping end"));
                };
                let entries = self.merge_and_check(entries)?;
                // A block mapping's start event comes at its first `:`; start at the first key.
                let pos = match entries.first() {
                    Some((k, _)) if (k.pos.line, k.pos.col) < (pos.line, pos.col) => k.pos,
                    _ => pos,
                };
                let size = 1 + entries.iter().map(|(k, v)| k.size + v.size).sum::<usize>();
                let height = 1 + entries.iter().map(|(_, v)| v.height).max().unwrap_or(0);
                self.push(
                    Node {
                        pos,
                        value: Value::Map(entries),
                        size,
                        height,
                    },
                    anchor,
                )?;
            }
        }
        Ok(())
    }

    /// Applies merge keys (`<<: *base`, explicit keys win) and reports duplicate keys.
    fn merge_and_check(&mut self, entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, Fatal> {
        let is_merge = |k: &Node| matches!(&k.value, Value::Scalar { text, style: Style::Plain, .. } if text == "<<");
        let mut out: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
        let mut merged: Vec<(Node, Node)> = Vec::new();
        for (k, v) in entries {
            if is_merge(&k) {
                let sources = match v.value {
                    Value::Map(m) => vec![m],
                    Value::Seq(items) => {
                        let mut maps = Vec::new();
                        for item in items {
                            match item.value {
                                Value::Map(m) => maps.push(m),
                                _ => {
                                    return Err(self.fatal(
                                        item.pos,
                                        "a merge key (`<<`) takes mappings only",
                                    ));
                                }
                            }
                        }
                        maps
                    }
                    Value::Scalar { .. } => {
                        return Err(self.fatal(
                            v.pos,
                            "a merge key (`<<`) takes a mapping or a list of mappings",
                        ));
                    }
                };
                merged.extend(sources.into_iter().flatten());
                continue;
            }
            let name = k.as_scalar().unwrap_or_default();
            if let Some((first, _)) = out.iter().find(|(e, _)| e.as_scalar() == Some(name)) {
                self.errors.push(YamlError {
                    pos: k.pos,
                    document: self.document.max(1),
                    message: format!("duplicate key `{name}` (first at line {})", first.pos.line),
                });
                continue;
            }
            out.push((k, v));
        }
        for (k, v) in merged {
            let name = k.as_scalar().unwrap_or_default();
            if !out.iter().any(|(e, _)| e.as_scalar() == Some(name)) {
                out.push((k, v));
            }
        }
        Ok(out)
    }
}

fn is_str_tag(tag: &Tag) -> bool {
    tag.suffix == "str" || tag.suffix.ends_with(":str")
}

/// Reads every document of `text` within `limits`.
pub fn parse(text: &str, limits: &Limits) -> Parsed {
    let mut b = Builder {
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        document: 0,
        root: None,
        errors: Vec::new(),
    };
    let mut documents = Vec::new();
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(x) => x,
            Err(e) => {
                let pos = Pos::from_marker(e.marker());
                let document = if b.stack.is_empty() && b.root.is_some() {
                    b.document + 1
                } else {
                    b.document.max(1)
                };
                b.errors.push(YamlError {
                    pos,
                    document,
                    message: format!("invalid YAML: {}", e.info()),
                });
                break;
            }
        };
        let pos = Pos::from_marker(&marker);
        let end = matches!(event, Event::StreamEnd);
        let doc_end = matches!(event, Event::DocumentEnd);
        if let Err(fatal) = b.on_event(event, pos) {
            b.errors.push(fatal);
            break;
        }
        if doc_end {
            documents.push(Document {
                index: b.document,
                root: b.root.take(),
            });
        }
        if end {
            break;
        }
    }
    Parsed {
        documents,
        errors: b.errors,
    }
}

/// A scalar as a JSON value, typed by the YAML 1.2 core schema when it is plain.
pub fn scalar_to_json(text: &str, style: Style, forced_string: bool) -> serde_json::Value {
    use serde_json::Value as J;
    if style != Style::Plain || forced_string {
        return J::String(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return J::Null,
        "true" | "True" | "TRUE" => return J::Bool(true),
        "false" | "False" | "FALSE" => return J::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(text) {
        return J::from(n);
    }
    if looks_like_float(text)
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return J::Number(n);
    }
    J::String(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = if let Some(hex) = digits.strip_prefix("0x") {
        if neg || text.starts_with('+') {
            return None;
        }
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        if neg || text.starts_with('+') {
            return None;
        }
        i64::from_str_radix(oct, 8).ok()?
    } else {
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i64>().ok()?
    };
    Some(if neg { -magnitude } else { magnitude })
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` (infinities and NaN stay strings: JSON
/// has no such numbers).
fn looks_like_float(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    let mantissa_ok = digits(int)
        && frac.is_none_or(digits)
        && !(int.is_empty() && frac.is_none_or(str::is_empty));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Node {
        let p = parse(text, &Limits::default());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p.documents
            .into_iter()
            .next()
            .and_then(|d| d.root)
            .expect("a document")
    }

    #[test]
    fn positions_are_one_based() {
        let n = one("a: b\nc:\n  d: 'x'\n");
        let Value::Map(m) = &n.value else { panic!() };
        assert_eq!((m[0].1.pos.line, m[0].1.pos.col), (1, 4));
        let Value::Map(inner) = &m[1].1.value else {
            panic!()
        };
        assert_eq!((inner[0].0.pos.line, inner[0].0.pos.col), (3, 3));
        assert_eq!((inner[0].1.pos.line, inner[0].1.pos.col), (3, 6));
    }

    #[test]
    fn collections_start_at_their_first_entry() {
        let n = one("# c\na:\n  b: 1\nl:\n- x\n- y\nf: {p: 1}\n");
        assert_eq!((n.pos.line, n.pos.col), (2, 1));
        let Value::Map(m) = &n.value else { panic!() };
        let at = |i: usize| (m[i].1.pos.line, m[i].1.pos.col);
        assert_eq!(at(0), (3, 3));
        assert_eq!(at(1), (5, 3));
        assert_eq!(at(2), (7, 4));
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        assert_eq!(scalar_to_json("1", Style::Plain, false), json!(1));
        assert_eq!(scalar_to_json("-0x10", Style::Plain, false), json!("-0x10"));
        assert_eq!(scalar_to_json("0x10", Style::Plain, false), json!(16));
        assert_eq!(scalar_to_json("1.5", Style::Plain, false), json!(1.5));
        assert_eq!(scalar_to_json("1e3", Style::Plain, false), json!(1000.0));
        assert_eq!(scalar_to_json(".", Style::Plain, false), json!("."));
        assert_eq!(scalar_to_json("1", Style::DoubleQuoted, false), json!("1"));
        assert_eq!(scalar_to_json("true", Style::Plain, true), json!("true"));
        assert_eq!(scalar_to_json("~", Style::Plain, false), json!(null));
        assert_eq!(scalar_to_json("yes", Style::Plain, false), json!("yes"));
        assert_eq!(scalar_to_json("1s", Style::Plain, false), json!("1s"));
    }

    #[test]
    fn merge_keys_and_aliases_expand() {
        let n = one("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n");
        let Value::Map(m) = &n.value else { panic!() };
        let Value::Map(d) = &m[1].1.value else {
            panic!()
        };
        let keys: Vec<_> = d
            .iter()
            .map(|(k, v)| (k.as_scalar().unwrap(), v.as_scalar().unwrap()))
            .collect();
        assert_eq!(keys, [("y", "3"), ("x", "1")]);
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let p = parse("a: 1\nb: 2\na: 3\n", &Limits::default());
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].pos.line, 3);
        assert!(
            p.errors[0]
                .message
                .contains("duplicate key `a` (first at line 1)")
        );
    }
}
