//! What a handler does to one direction's messages, and doing it: the body document is read
//! (from JSON, or extracted from XML), edited, rendered or serialized, then headers change.

use bytes::Bytes;
use mixer_attr::Value;
use mixer_core::adapter::{HeaderChange, MutationMessage};
use mixer_core::instance::InstanceView;
use mixer_core::mutation::Direction;
use mixer_core::status::{Code, Status};
use serde_json::{Map, Number, Value as Json};

use crate::path::JsonPath;
use crate::template::{Ref, Root, Scope, Template, lookup, text_of};
use crate::xml::{self, XmlField};

/// Where a value comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A constant (any JSON).
    Value(Json),
    /// A variable, with its type (`var: user`).
    Var(Ref),
    /// A rendered string (`template: "Bearer {{vars.token}}"`).
    Template(Template),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderKind {
    Set,
    Append,
    Remove,
}

/// A header operation (`name` lower-cased).
#[derive(Clone, Debug)]
pub struct HeaderOp {
    pub kind: HeaderKind,
    pub name: String,
    pub value: Option<Source>,
}

/// A JSON edit (`rename` is a move within the same parent).
#[derive(Clone, Debug)]
pub enum JsonEdit {
    Set(JsonPath, Source),
    Remove(JsonPath),
    Move(JsonPath, JsonPath),
}

/// Named groups of a regex over a variable, added to the variables (`vars.<group>`).
#[derive(Clone, Debug)]
pub struct Capture {
    pub var: String,
    pub regex: regex::Regex,
    pub names: Vec<String>,
}

/// The operations on one direction's messages.
#[derive(Clone, Debug, Default)]
pub struct BodyOps {
    pub headers: Vec<HeaderOp>,
    pub json: Vec<JsonEdit>,
    pub body: Option<Template>,
    pub xml: Option<Vec<XmlField>>,
    /// Whether messages need a body document (parsed JSON or extracted XML): set by
    /// [`BodyOps::prepare`].
    needs_document: bool,
}

impl BodyOps {
    fn sources(&self) -> impl Iterator<Item = &Source> {
        let edits = self.json.iter().filter_map(|e| match e {
            JsonEdit::Set(_, s) => Some(s),
            _ => None,
        });
        self.headers
            .iter()
            .filter_map(|h| h.value.as_ref())
            .chain(edits)
    }

    /// Every reference made (templates and `var` sources).
    pub fn refs(&self) -> Vec<&Ref> {
        let mut out: Vec<&Ref> = self.body.iter().flat_map(|t| t.refs()).collect();
        for s in self.sources() {
            match s {
                Source::Var(r) => out.push(r),
                Source::Template(t) => out.extend(t.refs()),
                Source::Value(_) => {}
            }
        }
        out
    }

    /// Works out, once, what messages need (call after filling in the operations).
    pub fn prepare(mut self) -> Self {
        self.needs_document = self.xml.is_some()
            || !self.json.is_empty()
            || self.refs().iter().any(|r| r.root == Root::Body);
        self
    }

    /// Whether the body must be read whole: it is read or replaced.
    pub fn reads_body(&self) -> bool {
        self.needs_document || self.body.is_some()
    }

    /// Rewrites one message.
    pub fn apply(
        &self,
        vars: &Vars<'_>,
        direction: Direction,
        body: &[u8],
        max_output: usize,
        message: &mut MutationMessage,
    ) -> Result<(), Status> {
        let invalid = |what: &str, e: String| {
            Status::new(
                Code::INVALID_ARGUMENT,
                format!("{direction} body {what}: {e}"),
            )
        };
        let doc = match &self.xml {
            Some(fields) => {
                xml::extract(fields, body).map_err(|e| invalid("is not the expected XML", e))?
            }
            None if self.needs_document => serde_json::from_slice(body)
                .map_err(|e| invalid("is not valid JSON", e.to_string()))?,
            None => Json::Null,
        };
        let mut scope = DocScope { doc, vars };
        for edit in &self.json {
            match edit {
                JsonEdit::Set(path, src) => {
                    let v = value(src, &scope, max_output)
                        .map_err(|e| invalid(&format!("edit `{}`", path.text()), e))?;
                    path.set(&mut scope.doc, v)
                        .map_err(|e| invalid("edit", e))?;
                }
                JsonEdit::Remove(path) => {
                    path.remove(&mut scope.doc);
                }
                JsonEdit::Move(from, to) => {
                    if let Some(v) = from.remove(&mut scope.doc) {
                        to.set(&mut scope.doc, v).map_err(|e| invalid("edit", e))?;
                    }
                }
            }
        }
        let new_body = match &self.body {
            Some(t) => Some(
                t.render(&scope, max_output)
                    .map_err(|e| invalid("template", e))?
                    .into_bytes(),
            ),
            None if self.xml.is_some() || !self.json.is_empty() => {
                let out = serde_json::to_vec(&scope.doc)
                    .map_err(|e| Status::new(Code::INTERNAL, e.to_string()))?;
                if out.len() > max_output {
                    let m = format!(
                        "the rewritten {direction} body is larger than {max_output} bytes (max_output_bytes)"
                    );
                    return Err(Status::new(Code::INTERNAL, m));
                }
                Some(out)
            }
            None => None,
        };
        for h in &self.headers {
            let name = h.name.clone();
            let change = match (&h.value, h.kind) {
                (_, HeaderKind::Remove) | (None, _) => HeaderChange::Remove(name),
                (Some(src), kind) => {
                    let v = value(src, &scope, max_output)
                        .map_err(|e| invalid(&format!("header `{name}`"), e))?;
                    let v = text_of(&v).into_owned();
                    if v.contains(['\r', '\n', '\0']) {
                        let m = format!("header `{name}`: the value holds a line break or NUL");
                        return Err(Status::new(Code::INVALID_ARGUMENT, m));
                    }
                    match kind {
                        HeaderKind::Append => HeaderChange::Append(name, v),
                        _ => HeaderChange::Set(name, v),
                    }
                }
            };
            message.header_changes.push(change);
        }
        if let Some(b) = new_body {
            message.body = Some(Bytes::from(b));
        }
        Ok(())
    }
}

fn value(src: &Source, scope: &DocScope<'_>, max: usize) -> Result<Json, String> {
    match src {
        Source::Value(v) => Ok(v.clone()),
        Source::Var(r) => lookup(r, scope, &[])
            .map(|v| v.into_owned())
            .ok_or_else(|| format!("`{}` is missing", r.text)),
        Source::Template(t) => t.render(scope, max).map(Json::String),
    }
}

/// The variables of one call: the instance's `variables.*` and the handler's captures.
pub struct Vars<'a> {
    pub view: &'a InstanceView<'a>,
    pub captured: Vec<(String, String)>,
}

impl<'a> Vars<'a> {
    /// The instance's variables plus what `captures` find in them.
    pub fn new(view: &'a InstanceView<'a>, captures: &[Capture]) -> Vars<'a> {
        let mut captured = Vec::new();
        for c in captures {
            let Some(text) = view
                .map("variables")
                .find(|(k, _)| *k == c.var)
                .map(|(_, v)| v)
            else {
                continue;
            };
            let text = match text.as_str() {
                Some(s) => std::borrow::Cow::Borrowed(s),
                None => std::borrow::Cow::Owned(text.to_string()),
            };
            if let Some(caps) = c.regex.captures(&text) {
                for name in &c.names {
                    if let Some(m) = caps.name(name) {
                        captured.push((name.clone(), m.as_str().to_string()));
                    }
                }
            }
        }
        Vars { view, captured }
    }

    fn get(&self, name: &str) -> Option<Json> {
        if let Some((_, v)) = self.captured.iter().find(|(k, _)| k == name) {
            return Some(Json::String(v.clone()));
        }
        let (_, v) = self.view.map("variables").find(|(k, _)| *k == name)?;
        Some(to_json(v))
    }
}

/// An attribute value as JSON: numbers and booleans typed, string maps as objects, everything
/// else as its text.
pub fn to_json(v: &Value<'_>) -> Json {
    match v {
        Value::Int64(i) => Json::from(*i),
        Value::Double(d) => {
            Number::from_f64(*d).map_or_else(|| Json::String(d.to_string()), Json::Number)
        }
        Value::Bool(b) => Json::Bool(*b),
        Value::StringMap(m) => Json::Object(
            m.to_map()
                .into_iter()
                .map(|(k, v)| (k, Json::String(v)))
                .collect::<Map<_, _>>(),
        ),
        other => match other.as_str() {
            Some(s) => Json::String(s.to_string()),
            None => Json::String(other.to_string()),
        },
    }
}

struct DocScope<'a> {
    doc: Json,
    vars: &'a Vars<'a>,
}

impl Scope for DocScope<'_> {
    fn body(&self) -> &Json {
        &self.doc
    }
    fn var(&self, name: &str) -> Option<Json> {
        self.vars.get(name)
    }
}
