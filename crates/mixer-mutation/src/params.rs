//! Handler params: parsed and checked once at config time, every error naming its field
//! (`params.request.json[1].set`).

use std::collections::HashMap;

use mixer_core::adapter::AdapterError;
use serde_json::{Map, Value as Json};

use crate::ops::{BodyOps, Capture, HeaderKind, HeaderOp, JsonEdit, Source};
use crate::path::JsonPath;
use crate::template::{Escape, Ref, Root, Template};
use crate::xml::{XmlField, XmlType};

/// Default `max_body_bytes`: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;

/// Everything the params say.
#[derive(Debug)]
pub struct Params {
    pub max_body_bytes: usize,
    pub max_output_bytes: usize,
    pub captures: Vec<Capture>,
    pub request: BodyOps,
    pub response: BodyOps,
}

type Obj = Map<String, Json>;

/// An error about `field` (written `params.x.y` here; the compiler adds the `params.` back).
fn err(field: &str, message: impl Into<String>) -> AdapterError {
    match field.strip_prefix("params.") {
        Some(f) => AdapterError::field(f, message),
        None => AdapterError::new(message),
    }
}

fn object<'a>(v: &'a Json, field: &str, allowed: &[&str]) -> Result<&'a Obj, AdapterError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(field, "must be a mapping"))?;
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(
            &format!("{field}.{k}"),
            format!("unknown field (expected one of: {})", allowed.join(", ")),
        ));
    }
    Ok(o)
}

fn string<'a>(o: &'a Obj, key: &str, field: &str) -> Result<Option<&'a str>, AdapterError> {
    match o.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(&format!("{field}.{key}"), "must be a string")),
    }
}

fn list<'a>(o: &'a Obj, key: &str, field: &str) -> Result<&'a [Json], AdapterError> {
    match o.get(key) {
        None | Some(Json::Null) => Ok(&[]),
        Some(Json::Array(a)) => Ok(a),
        Some(_) => Err(err(&format!("{field}.{key}"), "must be a list")),
    }
}

fn size(o: &Obj, key: &str, default: u64) -> Result<usize, AdapterError> {
    let field = format!("params.{key}");
    let n = match o.get(key) {
        None | Some(Json::Null) => default,
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0)
            .ok_or_else(|| err(&field, "must be a positive integer (bytes)"))?,
    };
    usize::try_from(n).map_err(|_| err(&field, "is too large"))
}

/// Parses handler params.
pub fn parse(params: &Json) -> Result<Params, AdapterError> {
    let empty = Json::Object(Map::new());
    let params = if params.is_null() { &empty } else { params };
    let allowed = [
        "max_body_bytes",
        "max_output_bytes",
        "namespaces",
        "captures",
        "request",
        "response",
    ];
    let o = object(params, "params", &allowed)?;
    let max_body_bytes = size(o, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)?;
    let default_output = (max_body_bytes as u64).saturating_mul(4);
    let max_output_bytes = size(o, "max_output_bytes", default_output)?;
    let mut namespaces = HashMap::new();
    if let Some(ns) = o.get("namespaces").filter(|v| !v.is_null()) {
        let ns = ns
            .as_object()
            .ok_or_else(|| err("params.namespaces", "must map prefixes to namespace URIs"))?;
        for (p, uri) in ns {
            let uri = uri
                .as_str()
                .ok_or_else(|| err(&format!("params.namespaces.{p}"), "must be a string"))?;
            namespaces.insert(p.clone(), uri.to_string());
        }
    }
    let mut captures = Vec::new();
    for (i, c) in list(o, "captures", "params")?.iter().enumerate() {
        captures.push(capture(c, &format!("params.captures[{i}]"))?);
    }
    let direction = |key: &str| match o.get(key) {
        None | Some(Json::Null) => Ok(BodyOps::default()),
        Some(v) => body_ops(v, &format!("params.{key}"), &namespaces),
    };
    Ok(Params {
        max_body_bytes,
        max_output_bytes,
        captures,
        request: direction("request")?,
        response: direction("response")?,
    })
}

fn capture(v: &Json, field: &str) -> Result<Capture, AdapterError> {
    let o = object(v, field, &["var", "regex"])?;
    let var =
        string(o, "var", field)?.ok_or_else(|| err(&format!("{field}.var"), "is required"))?;
    let re =
        string(o, "regex", field)?.ok_or_else(|| err(&format!("{field}.regex"), "is required"))?;
    let regex = regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| err(&format!("{field}.regex"), e.to_string()))?;
    let names: Vec<String> = regex
        .capture_names()
        .flatten()
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(err(
            &format!("{field}.regex"),
            "has no named group (`(?P<name>...)`) to capture",
        ));
    }
    Ok(Capture {
        var: var.to_string(),
        regex,
        names,
    })
}

fn body_ops(
    v: &Json,
    field: &str,
    namespaces: &HashMap<String, String>,
) -> Result<BodyOps, AdapterError> {
    let o = object(v, field, &["headers", "json", "body", "xml_to_json"])?;
    let mut ops = BodyOps::default();
    for (i, h) in list(o, "headers", field)?.iter().enumerate() {
        ops.headers
            .push(header_op(h, &format!("{field}.headers[{i}]"))?);
    }
    for (i, e) in list(o, "json", field)?.iter().enumerate() {
        ops.json.push(json_edit(e, &format!("{field}.json[{i}]"))?);
    }
    if let Some(b) = o.get("body").filter(|v| !v.is_null()) {
        let f = format!("{field}.body");
        let b = object(b, &f, &["template", "escape"])?;
        let src = string(b, "template", &f)?
            .ok_or_else(|| err(&format!("{f}.template"), "is required"))?;
        let escape = match string(b, "escape", &f)? {
            None | Some("xml") => Escape::Xml,
            Some("json") => Escape::Json,
            Some("none") => Escape::None,
            Some(other) => {
                return Err(err(
                    &format!("{f}.escape"),
                    format!("`{other}` is not one of xml, json, none"),
                ));
            }
        };
        let t = Template::parse(src, escape).map_err(|e| err(&format!("{f}.template"), e))?;
        ops.body = Some(t);
    }
    if let Some(x) = o.get("xml_to_json").filter(|v| !v.is_null()) {
        let f = format!("{field}.xml_to_json");
        let x = object(x, &f, &["fields"])?;
        let mut fields = Vec::new();
        for (i, fv) in list(x, "fields", &f)?.iter().enumerate() {
            fields.push(xml_field(fv, &format!("{f}.fields[{i}]"), namespaces)?);
        }
        // Targets must not collide (`a` and `a.b`, or the same twice): set them all on a
        // scratch document, then each must still hold its own value.
        let mut scratch = Json::Object(Map::new());
        for (i, xf) in fields.iter().enumerate() {
            xf.to
                .set(&mut scratch, Json::from(i))
                .map_err(|e| err(&format!("{f}.fields[{i}].to"), e))?;
        }
        for (i, xf) in fields.iter().enumerate() {
            if xf.to.get(&scratch) != Some(&Json::from(i)) {
                let m = format!("`{}` is overwritten by a later field", xf.to.text());
                return Err(err(&format!("{f}.fields[{i}].to"), m));
            }
        }
        ops.xml = Some(fields);
    }
    Ok(ops.prepare())
}

fn source(o: &Obj, field: &str, required: bool) -> Result<Option<Source>, AdapterError> {
    let given: Vec<&str> = ["value", "var", "template"]
        .into_iter()
        .filter(|k| o.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    match given.as_slice() {
        [] if required => Err(err(field, "needs one of `value`, `var`, `template`")),
        [] => Ok(None),
        [_, _, ..] => Err(err(field, "give only one of `value`, `var`, `template`")),
        ["value"] => Ok(o.get("value").cloned().map(Source::Value)),
        ["var"] => {
            let name = string(o, "var", field)?.unwrap_or_default();
            let r = var_ref(name).map_err(|e| err(&format!("{field}.var"), e))?;
            Ok(Some(Source::Var(r)))
        }
        _ => {
            let t = string(o, "template", field)?.unwrap_or_default();
            let t = Template::parse(t, Escape::None)
                .map_err(|e| err(&format!("{field}.template"), e))?;
            Ok(Some(Source::Template(t)))
        }
    }
}

fn var_ref(name: &str) -> Result<Ref, String> {
    let path: Vec<String> = name.split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("`{name}` is not a variable name"));
    }
    Ok(Ref {
        root: Root::Vars,
        path,
        text: format!("vars.{name}"),
    })
}

/// The single operation key of an entry (`set`, `remove`, ...) and its string argument.
fn operation<'a>(
    o: &'a Obj,
    field: &str,
    ops: &[&'static str],
) -> Result<(&'static str, &'a str), AdapterError> {
    let given: Vec<&'static str> = ops.iter().copied().filter(|k| o.contains_key(*k)).collect();
    let [op] = given.as_slice() else {
        return Err(err(
            field,
            format!("needs exactly one of: {}", ops.join(", ")),
        ));
    };
    let arg = string(o, op, field)?.ok_or_else(|| err(&format!("{field}.{op}"), "is required"))?;
    Ok((op, arg))
}

fn header_op(v: &Json, field: &str) -> Result<HeaderOp, AdapterError> {
    let o = object(
        v,
        field,
        &["set", "append", "remove", "value", "var", "template"],
    )?;
    let (op, name) = operation(o, field, &["set", "append", "remove"])?;
    let name_field = format!("{field}.{op}");
    let lower = name.to_ascii_lowercase();
    let pseudo = [":path", ":method", ":authority", ":scheme", ":status"];
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !(token(&lower) || (op == "set" && pseudo.contains(&lower.as_str()))) {
        return Err(err(
            &name_field,
            format!("`{name}` is not a header name that can be changed"),
        ));
    }
    let kind = match op {
        "set" => HeaderKind::Set,
        "append" => HeaderKind::Append,
        _ => HeaderKind::Remove,
    };
    let value = source(o, field, kind != HeaderKind::Remove)?;
    if kind == HeaderKind::Remove && value.is_some() {
        return Err(err(field, "`remove` takes no value"));
    }
    if let Some(Source::Value(v)) = &value
        && !(v.is_string() || v.is_number() || v.is_boolean())
    {
        let m = "must be a string, number or boolean";
        return Err(err(&format!("{field}.value"), m));
    }
    Ok(HeaderOp {
        kind,
        name: lower,
        value,
    })
}

fn json_edit(v: &Json, field: &str) -> Result<JsonEdit, AdapterError> {
    let o = object(
        v,
        field,
        &[
            "set", "remove", "move", "rename", "to", "value", "var", "template",
        ],
    )?;
    let (op, path) = operation(o, field, &["set", "remove", "move", "rename"])?;
    let at = JsonPath::parse(path).map_err(|e| err(&format!("{field}.{op}"), e))?;
    let to = string(o, "to", field)?;
    let no_to = |edit: JsonEdit| match to {
        Some(_) => Err(err(&format!("{field}.to"), format!("`{op}` takes no `to`"))),
        None => Ok(edit),
    };
    let to_field = format!("{field}.to");
    match op {
        "set" => {
            let src = source(o, field, true)?.ok_or_else(|| err(field, "needs a value"))?;
            no_to(JsonEdit::Set(at, src))
        }
        "remove" | "move" | "rename" if source(o, field, false)?.is_some() => {
            Err(err(field, format!("`{op}` takes no value")))
        }
        "remove" => no_to(JsonEdit::Remove(at)),
        "move" => {
            let to = to.ok_or_else(|| err(&to_field, "is required"))?;
            let to = JsonPath::parse(to).map_err(|e| err(&to_field, e))?;
            Ok(JsonEdit::Move(at, to))
        }
        _ => {
            let key = to.ok_or_else(|| err(&to_field, "is required (the new name)"))?;
            if key.is_empty() {
                return Err(err(&to_field, "is empty"));
            }
            let mut segs = at.segments().to_vec();
            segs.pop();
            segs.push(key.to_string());
            let text = segs.join(".");
            Ok(JsonEdit::Move(at, JsonPath::from_segments(segs, text)))
        }
    }
}

fn xml_field(
    v: &Json,
    field: &str,
    namespaces: &HashMap<String, String>,
) -> Result<XmlField, AdapterError> {
    let o = object(v, field, &["path", "to", "type", "required", "all"])?;
    let text =
        string(o, "path", field)?.ok_or_else(|| err(&format!("{field}.path"), "is required"))?;
    let (path, attribute) =
        XmlField::parse_path(text, namespaces).map_err(|e| err(&format!("{field}.path"), e))?;
    let to = string(o, "to", field)?.ok_or_else(|| err(&format!("{field}.to"), "is required"))?;
    let to = JsonPath::parse(to).map_err(|e| err(&format!("{field}.to"), e))?;
    let ty = match string(o, "type", field)? {
        None | Some("string") => XmlType::String,
        Some("int") => XmlType::Int,
        Some("float") => XmlType::Float,
        Some("bool") => XmlType::Bool,
        Some(other) => {
            return Err(err(
                &format!("{field}.type"),
                format!("`{other}` is not one of string, int, float, bool"),
            ));
        }
    };
    let flag = |key: &str| match o.get(key) {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(_) => Err(err(&format!("{field}.{key}"), "must be true or false")),
    };
    Ok(XmlField {
        path,
        attribute,
        text: text.to_string(),
        to,
        ty,
        required: flag("required")?,
        all: flag("all")?,
    })
}
