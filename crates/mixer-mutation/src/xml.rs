//! XML (SOAP) to JSON: fields picked out of an XML body by element paths.
//!
//! A path names elements from the root: `Envelope/Body/AddBookResponse/BookId`. A segment
//! matches an element's local name in any namespace, `soap:Body` the local name in the namespace
//! the handler binds to `soap` (`params.namespaces`), and `*` any element; a last segment
//! `@id` (or `@p:id`) names an attribute. An element's value is its text (descendants included,
//! entity and character references resolved, trimmed). Only the five predefined entities are
//! known: a DTD never expands anything.

use std::collections::HashMap;

use quick_xml::NsReader;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use serde_json::{Map, Number, Value as Json};

use crate::path::JsonPath;

/// How an extracted text becomes JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XmlType {
    String,
    Int,
    Float,
    Bool,
}

/// One name in a path: a local name (`*` for any) and the namespace URI it must be in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    pub ns: Option<String>,
    pub local: String,
}

impl Name {
    /// Parses `p:local` / `local`, resolving `p` in `namespaces`.
    pub fn parse(text: &str, namespaces: &HashMap<String, String>) -> Result<Name, String> {
        let (ns, local) = match text.split_once(':') {
            Some((p, local)) => match namespaces.get(p) {
                Some(uri) => (Some(uri.clone()), local),
                None => return Err(format!("prefix `{p}` is not in `namespaces`")),
            },
            None => (None, text),
        };
        if local.is_empty() || local.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(format!("`{text}` is not an element name"));
        }
        Ok(Name {
            ns,
            local: local.to_string(),
        })
    }

    fn matches(&self, ns: Option<&str>, local: &str) -> bool {
        (self.local == "*" || self.local == local)
            && self.ns.as_deref().is_none_or(|want| Some(want) == ns)
    }
}

/// One field to extract.
#[derive(Clone, Debug)]
pub struct XmlField {
    pub path: Vec<Name>,
    pub attribute: Option<Name>,
    /// The path as written, for messages.
    pub text: String,
    pub to: JsonPath,
    pub ty: XmlType,
    pub required: bool,
    /// Every match, as a list (otherwise the first match).
    pub all: bool,
}

impl XmlField {
    /// Parses the element path `text` (leading `/` optional).
    pub fn parse_path(
        text: &str,
        namespaces: &HashMap<String, String>,
    ) -> Result<(Vec<Name>, Option<Name>), String> {
        let mut segs: Vec<&str> = text.trim_start_matches('/').split('/').collect();
        let attribute = match segs.last().and_then(|s| s.strip_prefix('@')) {
            Some(a) => {
                let a = Name::parse(a, namespaces)?;
                segs.pop();
                Some(a)
            }
            None => None,
        };
        if segs.is_empty() || segs.iter().any(|s| s.is_empty()) {
            return Err(format!("`{text}` is not an element path"));
        }
        let path = segs
            .iter()
            .map(|s| Name::parse(s, namespaces))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((path, attribute))
    }

    fn matches(&self, stack: &[(Option<String>, String)]) -> bool {
        self.path.len() == stack.len()
            && self
                .path
                .iter()
                .zip(stack)
                .all(|(n, (ns, local))| n.matches(ns.as_deref(), local))
    }
}

const MAX_DEPTH: usize = 256;

/// Extracts `fields` from `body` into a new JSON object.
pub fn extract(fields: &[XmlField], body: &[u8]) -> Result<Json, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<(Option<String>, String)> = Vec::new();
    let mut found: Vec<Vec<String>> = vec![Vec::new(); fields.len()];
    // Open captures: (field, depth of its element, text so far).
    let mut open: Vec<(usize, usize, String)> = Vec::new();
    let mut seen_root = false;
    loop {
        let at = reader.buffer_position();
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (owned_ns(ns)?, event),
            Err(e) => return Err(format!("at byte {at}: {e}")),
        };
        match event {
            Event::Start(e) | Event::Empty(e) if stack.is_empty() && seen_root => {
                let name = e.local_name().as_ref().to_string();
                return Err(format!("a second root element <{name}> at byte {at}"));
            }
            Event::Start(e) => {
                seen_root = true;
                open_element(&reader, &e, ns, fields, &mut stack, &mut found, &mut open)?;
            }
            Event::Empty(e) => {
                seen_root = true;
                open_element(&reader, &e, ns, fields, &mut stack, &mut found, &mut open)?;
                close_element(&mut stack, &mut found, &mut open);
            }
            Event::End(_) => close_element(&mut stack, &mut found, &mut open),
            Event::Text(t) if stack.is_empty() && !t.xml10_content().trim().is_empty() => {
                return Err(format!("text outside the root element at byte {at}"));
            }
            Event::Text(t) => append(&mut open, &t.xml10_content()),
            Event::CData(t) => append(&mut open, &t.xml10_content()),
            Event::GeneralRef(r) => append(&mut open, &resolve_ref(&r)?),
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some((_, name)) = stack.last() {
        return Err(format!("the document ends inside <{name}>"));
    }
    if !seen_root {
        return Err("there is no root element".to_string());
    }
    let mut doc = Json::Object(Map::new());
    for (field, values) in fields.iter().zip(found) {
        let value = if field.all {
            let list = values
                .iter()
                .map(|v| convert(field, v))
                .collect::<Result<Vec<_>, _>>()?;
            if list.is_empty() && field.required {
                return Err(missing(field));
            }
            Json::Array(list)
        } else {
            match values.first() {
                Some(v) => convert(field, v)?,
                None if field.required => return Err(missing(field)),
                None => continue,
            }
        };
        field.to.set(&mut doc, value)?;
    }
    Ok(doc)
}

fn owned_ns(ns: ResolveResult<'_>) -> Result<Option<String>, String> {
    match ns {
        ResolveResult::Bound(n) => Ok(Some(n.as_ref().to_string())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(p) => Err(format!("namespace prefix `{p}` is not declared")),
    }
}

fn open_element(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
    ns: Option<String>,
    fields: &[XmlField],
    stack: &mut Vec<(Option<String>, String)>,
    found: &mut [Vec<String>],
    open: &mut Vec<(usize, usize, String)>,
) -> Result<(), String> {
    if stack.len() >= MAX_DEPTH {
        return Err(format!("elements nest deeper than {MAX_DEPTH}"));
    }
    let local = e.local_name().as_ref().to_string();
    stack.push((ns, local));
    for (i, field) in fields.iter().enumerate() {
        if !field.matches(stack) {
            continue;
        }
        match &field.attribute {
            None => open.push((i, stack.len(), String::new())),
            Some(want) => {
                for attr in e.attributes() {
                    let attr = attr.map_err(|err| format!("bad attribute: {err}"))?;
                    let (ans, alocal) = reader.resolver().resolve_attribute(attr.key);
                    let ans = owned_ns(ans)?;
                    let alocal = alocal.as_ref().to_string();
                    if want.matches(ans.as_deref(), &alocal) {
                        let v = attr
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .map_err(|err| format!("attribute `{alocal}`: {err}"))?;
                        found[i].push(v.trim().to_string());
                    }
                }
            }
        }
    }
    Ok(())
}

fn close_element(
    stack: &mut Vec<(Option<String>, String)>,
    found: &mut [Vec<String>],
    open: &mut Vec<(usize, usize, String)>,
) {
    let depth = stack.len();
    while open.last().is_some_and(|(_, d, _)| *d == depth) {
        if let Some((i, _, text)) = open.pop() {
            found[i].push(text.trim().to_string());
        }
    }
    stack.pop();
}

fn append(open: &mut [(usize, usize, String)], text: &str) {
    for (_, _, buf) in open {
        buf.push_str(text);
    }
}

fn resolve_ref(r: &BytesRef<'_>) -> Result<String, String> {
    if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(c.to_string());
    }
    let name = r.xml10_content();
    match quick_xml::escape::resolve_predefined_entity(&name) {
        Some(s) => Ok(s.to_string()),
        None => Err(format!("unknown entity `&{name};`")),
    }
}

fn convert(field: &XmlField, v: &str) -> Result<Json, String> {
    let bad = |what: &str| format!("`{}`: `{v}` is not {what}", field.text);
    Ok(match field.ty {
        XmlType::String => Json::String(v.to_string()),
        XmlType::Int => Json::from(v.parse::<i64>().map_err(|_| bad("an integer"))?),
        XmlType::Float => {
            let f = v.parse::<f64>().map_err(|_| bad("a number"))?;
            Json::Number(Number::from_f64(f).ok_or_else(|| bad("a finite number"))?)
        }
        XmlType::Bool => match v {
            "true" | "1" => Json::Bool(true),
            "false" | "0" => Json::Bool(false),
            _ => return Err(bad("a boolean")),
        },
    })
}

fn missing(field: &XmlField) -> String {
    format!("there is no `{}`", field.text)
}
