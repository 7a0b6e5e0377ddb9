//! The body template language, parsed once at config time.
//!
//! `{{body.shelf}}` inserts a field of the JSON body, `{{vars.user}}` an instance variable (or a
//! handler capture), `{{body.note | "none"}}` gives a default for a missing field, and
//! `{{"{{"}}` a literal. `{{#each body.tags}}<Tag>{{item}}</Tag>{{/each}}` repeats over a list
//! (`item` is the element; `item.name` a field of it) and `{{#if body.note}}...{{/if}}` keeps its
//! content when the value is present and not `null`, `false`, `""` or `[]`. Inserted values are
//! escaped for the template's output (`xml`, `json` string content, or `none`); objects and lists
//! are inserted as JSON text.

use std::borrow::Cow;

use serde_json::Value as Json;

use crate::path::{get_in, kind};

/// How inserted values are escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// XML text and attribute content (`&lt;`, `&amp;`, `&quot;`, ...); characters XML cannot
    /// carry (most control characters) are an error.
    Xml,
    /// The content of a JSON string (without the quotes).
    Json,
    /// As is.
    None,
}

/// Where a reference starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    Body,
    Vars,
    Item,
}

/// `body.a.b`, `vars.user`, `item.name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref {
    pub root: Root,
    /// For `vars`, the first segment is the variable's name.
    pub path: Vec<String>,
    pub text: String,
}

#[derive(Clone, Debug)]
enum Expr {
    Ref { r: Ref, default: Option<Json> },
    Literal(Json),
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Insert(Expr),
    Each(Ref, Vec<Node>),
    If(Ref, Vec<Node>),
}

/// A parsed template.
#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<Node>,
    escape: Escape,
    /// Every reference, for config-time checks (which variables, whether the body is read).
    refs: Vec<Ref>,
}

/// What a template reads: the body document and variables.
pub trait Scope {
    fn body(&self) -> &Json;
    /// The variable `name` as JSON.
    fn var(&self, name: &str) -> Option<Json>;
}

const MAX_NESTING: usize = 16;

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str, escape: Escape) -> Result<Template, String> {
        // Open blocks: (tag, ref, nodes before the block).
        let mut stack: Vec<(&'static str, Ref, Vec<Node>)> = Vec::new();
        let mut nodes = Vec::new();
        let mut refs = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                nodes.push(Node::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                format!(
                    "`{{{{` at byte {} is not closed",
                    source.len() - rest.len() + start
                )
            })?;
            let tag = after[..end].trim();
            rest = &after[end + 2..];
            let in_each = stack.iter().any(|(t, _, _)| *t == "each");
            if let Some((block, arg)) = tag
                .strip_prefix("#each ")
                .map(|a| ("each", a))
                .or_else(|| tag.strip_prefix("#if ").map(|a| ("if", a)))
            {
                if stack.len() >= MAX_NESTING {
                    return Err(format!("blocks nest deeper than {MAX_NESTING}"));
                }
                let r = parse_ref(arg.trim(), in_each)?;
                refs.push(r.clone());
                stack.push((block, r, std::mem::take(&mut nodes)));
            } else if let Some(block) = tag.strip_prefix('/') {
                let Some((open, r, before)) = stack.pop() else {
                    return Err(format!("`{{{{/{block}}}}}` closes no block"));
                };
                if open != block.trim() {
                    return Err(format!(
                        "`{{{{#{open} {}}}}}` is closed by `{{{{/{block}}}}}`",
                        r.text
                    ));
                }
                let inner = std::mem::replace(&mut nodes, before);
                nodes.push(match open {
                    "each" => Node::Each(r, inner),
                    _ => Node::If(r, inner),
                });
            } else {
                let expr = parse_expr(tag, in_each)?;
                if let Expr::Ref { r, .. } = &expr {
                    refs.push(r.clone());
                }
                nodes.push(Node::Insert(expr));
            }
        }
        if let Some((open, r, _)) = stack.last() {
            return Err(format!("`{{{{#{open} {}}}}}` is not closed", r.text));
        }
        if !rest.is_empty() {
            nodes.push(Node::Text(rest.to_string()));
        }
        Ok(Template {
            nodes,
            escape,
            refs,
        })
    }

    /// Every reference the template makes.
    pub fn refs(&self) -> &[Ref] {
        &self.refs
    }

    /// Whether the template reads the body.
    pub fn reads_body(&self) -> bool {
        self.refs.iter().any(|r| r.root == Root::Body)
    }

    /// Renders into a string of at most `max` bytes.
    pub fn render(&self, scope: &dyn Scope, max: usize) -> Result<String, String> {
        let mut out = String::new();
        let mut items = Vec::new();
        render_nodes(&self.nodes, self.escape, scope, &mut items, &mut out, max)?;
        Ok(out)
    }
}

fn parse_ref(text: &str, in_each: bool) -> Result<Ref, String> {
    let mut parts = text.split('.');
    let root = match parts.next() {
        Some("body") => Root::Body,
        Some("vars") => Root::Vars,
        Some("item") if in_each => Root::Item,
        Some("item") => return Err(format!("`{text}`: `item` is only defined inside `#each`")),
        _ => {
            return Err(format!(
                "`{text}`: a reference starts with `body`, `vars` or `item`"
            ));
        }
    };
    let path: Vec<String> = parts.map(str::to_string).collect();
    if path
        .iter()
        .any(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        return Err(format!("`{text}` is not a valid reference"));
    }
    if root == Root::Vars && path.is_empty() {
        return Err(format!("`{text}`: name a variable (`vars.<name>`)"));
    }
    Ok(Ref {
        root,
        path,
        text: text.to_string(),
    })
}

fn parse_expr(tag: &str, in_each: bool) -> Result<Expr, String> {
    if tag.starts_with('"') || tag.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        let v: Json =
            serde_json::from_str(tag).map_err(|e| format!("`{tag}`: bad literal: {e}"))?;
        return Ok(Expr::Literal(v));
    }
    let (r, default) = match tag.split_once('|') {
        Some((r, d)) => {
            let d = d.trim();
            let v: Json = serde_json::from_str(d)
                .map_err(|e| format!("`{tag}`: the default `{d}` is not a literal: {e}"))?;
            (r.trim(), Some(v))
        }
        None => (tag, None),
    };
    Ok(Expr::Ref {
        r: parse_ref(r, in_each)?,
        default,
    })
}

/// The value `r` names, if present.
pub fn lookup<'a>(r: &Ref, scope: &'a dyn Scope, items: &[&'a Json]) -> Option<Cow<'a, Json>> {
    match r.root {
        Root::Body => get_in(scope.body(), &r.path).map(Cow::Borrowed),
        Root::Item => get_in(items.last()?, &r.path).map(Cow::Borrowed),
        Root::Vars => {
            let (name, rest) = r.path.split_first()?;
            let v = scope.var(name)?;
            get_in(&v, rest).cloned().map(Cow::Owned)
        }
    }
}

fn render_nodes<'a>(
    nodes: &'a [Node],
    escape: Escape,
    scope: &'a dyn Scope,
    items: &mut Vec<&'a Json>,
    out: &mut String,
    max: usize,
) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Insert(Expr::Literal(v)) => insert(v, Escape::None, out)?,
            Node::Insert(Expr::Ref { r, default }) => match lookup(r, scope, items) {
                Some(v) => insert(&v, escape, out)?,
                None => match default {
                    Some(d) => insert(d, escape, out)?,
                    None => return Err(format!("`{}` is missing", r.text)),
                },
            },
            Node::If(r, inner) => {
                if lookup(r, scope, items).is_some_and(|v| truthy(&v)) {
                    render_nodes(inner, escape, scope, items, out, max)?;
                }
            }
            Node::Each(r, inner) => {
                let list = match r.root {
                    Root::Body => get_in(scope.body(), &r.path),
                    Root::Item => items.last().and_then(|i| get_in(i, &r.path)),
                    // Variables are owned per lookup; lists come from the body.
                    Root::Vars => return Err(format!("`#each {}`: loop over the body", r.text)),
                };
                match list {
                    None | Some(Json::Null) => {}
                    Some(Json::Array(elements)) => {
                        for e in elements {
                            items.push(e);
                            let done = render_nodes(inner, escape, scope, items, out, max);
                            items.pop();
                            done?;
                        }
                    }
                    Some(other) => {
                        return Err(format!("`{}` is {}, not a list", r.text, kind(other)));
                    }
                }
            }
        }
        if out.len() > max {
            return Err(format!("the rendered body is larger than {max} bytes"));
        }
    }
    Ok(())
}

fn truthy(v: &Json) -> bool {
    match v {
        Json::Null | Json::Bool(false) => false,
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// The text of a value: strings as they are, `null` as nothing, objects and lists as JSON.
pub fn text_of(v: &Json) -> Cow<'_, str> {
    match v {
        Json::String(s) => Cow::Borrowed(s),
        Json::Null => Cow::Borrowed(""),
        Json::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Json::Number(n) => Cow::Owned(n.to_string()),
        other => Cow::Owned(other.to_string()),
    }
}

fn insert(v: &Json, escape: Escape, out: &mut String) -> Result<(), String> {
    let text = text_of(v);
    match escape {
        Escape::None => out.push_str(&text),
        Escape::Xml => escape_xml(&text, out)?,
        Escape::Json => {
            let quoted = Json::String(text.into_owned()).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
    }
    Ok(())
}

/// Appends `s` escaped for XML text or attribute values.
pub fn escape_xml(s: &str, out: &mut String) -> Result<(), String> {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                return Err(format!(
                    "a value holds the character U+{:04X}, which XML cannot carry",
                    c as u32
                ));
            }
            c => out.push(c),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct S(Json);
    impl Scope for S {
        fn body(&self) -> &Json {
            &self.0
        }
        fn var(&self, name: &str) -> Option<Json> {
            (name == "user").then(|| json!("a&b"))
        }
    }

    fn render(src: &str, escape: Escape, body: Json) -> Result<String, String> {
        Template::parse(src, escape)?.render(&S(body), 1 << 20)
    }

    #[test]
    fn inserts_escapes_and_defaults() {
        let body = json!({"t": "<b>\"x\"</b>", "n": 3, "o": {"k": 1}});
        let out = render(
            "{{body.t}}|{{ body.n }}|{{vars.user}}|{{body.z | \"none\"}}|{{body.o}}|{{\"{{\"}}",
            Escape::Xml,
            body.clone(),
        );
        assert_eq!(
            out.as_deref(),
            Ok("&lt;b&gt;&quot;x&quot;&lt;/b&gt;|3|a&amp;b|none|{&quot;k&quot;:1}|{{")
        );
        let out = render("\"{{body.t}}\"", Escape::Json, body);
        assert_eq!(out.as_deref(), Ok(r#""<b>\"x\"</b>""#));
    }

    #[test]
    fn loops_and_conditions() {
        let body = json!({"tags": [{"n": "a"}, {"n": "<b>"}], "empty": [], "note": ""});
        let src = "{{#each body.tags}}<T>{{item.n}}</T>{{/each}}{{#if body.empty}}E{{/if}}\
                   {{#if body.note}}N{{/if}}{{#if body.tags}}Y{{/if}}";
        assert_eq!(
            render(src, Escape::Xml, body).as_deref(),
            Ok("<T>a</T><T>&lt;b&gt;</T>Y")
        );
    }

    #[test]
    fn errors_are_clear() {
        let e = |src: &str| Template::parse(src, Escape::Xml).unwrap_err();
        assert!(e("{{body.a").contains("not closed"));
        assert!(e("{{#each body.a}}x").contains("not closed"));
        assert!(e("{{#each body.a}}x{{/if}}").contains("closed by"));
        assert!(e("{{item.a}}").contains("only defined inside"));
        assert!(e("{{request.path}}").contains("starts with"));
        assert!(e("{{body.a | nope}}").contains("not a literal"));
        let missing = render("{{body.title}}", Escape::Xml, json!({}));
        assert_eq!(missing, Err("`body.title` is missing".to_string()));
        let ctl = render("{{body.t}}", Escape::Xml, json!({"t": "\u{1}"}));
        assert!(ctl.unwrap_err().contains("U+0001"));
        let big = Template::parse("{{#each body.l}}xxxxxxxxxx{{/each}}", Escape::None).unwrap();
        let err = big.render(&S(json!({"l": [1, 2, 3]})), 25).unwrap_err();
        assert!(err.contains("larger than 25 bytes"), "{err}");
    }
}
