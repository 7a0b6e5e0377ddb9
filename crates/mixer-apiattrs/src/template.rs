//! Parser of URL path templates in the syntax of Google API HTTP rules and Istio's
//! `HTTPAPISpec.patterns[].uriTemplate`:
//!
//! ```text
//! Template = "/" [ Segment { "/" Segment } ] [ "/" ] ;
//! Segment  = LITERAL | "*" | "**" | "{" NAME [ "=" ( "*" | "**" ) ] "}" ;
//! NAME     = IDENT { "." IDENT } ;
//! ```
//!
//! `*` and `{name}` / `{name=*}` match one non-empty segment; `**` and `{name=**}` match the rest
//! of the path (zero or more segments) and must come last. Literals may be percent-encoded and
//! are compared decoded. A trailing `/` is dropped (requests drop theirs too). Not supported, and
//! refused with an error: `:verb` suffixes, multi-segment variable patterns (`{name=shelves/*}`),
//! query strings and fragments.

use crate::decode::decode;

/// Most segments a template may have (bounds the matcher's depth).
pub const MAX_SEGMENTS: usize = 64;

/// One segment of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A literal segment, percent-decoded.
    Literal(String),
    /// One non-empty segment: `*` (no name) or `{name}` / `{name=*}`.
    Single(Option<String>),
    /// The rest of the path, zero or more segments: `**` or `{name=**}`. Always last.
    Rest(Option<String>),
}

/// A parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    pub segments: Vec<Segment>,
}

/// Why a template was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template is empty")]
    Empty,
    #[error("template must start with `/`")]
    NoLeadingSlash,
    #[error("template has an empty segment (`//`)")]
    EmptySegment,
    #[error("`**` must be the last segment")]
    RestNotLast,
    #[error("`:verb` suffixes are not supported")]
    Verb,
    #[error("query strings and fragments (`?`, `#`) are not supported in templates")]
    Query,
    #[error("variable `{{` is not closed by `}}`")]
    Unterminated,
    #[error("`{0}` is not a variable name (letters, digits, `_`, dotted)")]
    BadName(String),
    #[error("variable `{0}` appears twice")]
    DuplicateName(String),
    #[error(
        "variable `{name}` has pattern `{pattern}`: only `*` and `**` are supported as patterns"
    )]
    UnsupportedPattern { name: String, pattern: String },
    #[error("segment `{0}`: `{{`, `}}` and `*` must stand for a whole segment")]
    BadLiteral(String),
    #[error("template has more than {MAX_SEGMENTS} segments")]
    TooLong,
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_ident)
}

impl PathTemplate {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<PathTemplate, TemplateError> {
        if text.is_empty() {
            return Err(TemplateError::Empty);
        }
        let Some(mut body) = text.strip_prefix('/') else {
            return Err(TemplateError::NoLeadingSlash);
        };
        if body.contains(['?', '#']) {
            return Err(TemplateError::Query);
        }
        if let Some(stripped) = body.strip_suffix('/') {
            body = stripped;
        }
        let mut segments = Vec::new();
        if body.is_empty() {
            return Ok(PathTemplate { segments });
        }
        let mut names: Vec<&str> = Vec::new();
        let mut rest = body;
        loop {
            if segments.len() >= MAX_SEGMENTS {
                return Err(TemplateError::TooLong);
            }
            if matches!(segments.last(), Some(Segment::Rest(_))) {
                return Err(TemplateError::RestNotLast);
            }
            let (segment, tail) = if rest.starts_with('{') {
                let close = rest.find('}').ok_or(TemplateError::Unterminated)?;
                let (var, after) = rest.split_at(close + 1);
                match after.strip_prefix('/') {
                    Some(t) => (var, Some(t)),
                    None if after.is_empty() => (var, None),
                    None if after.starts_with(':') => return Err(TemplateError::Verb),
                    None => return Err(TemplateError::BadLiteral(format!("{var}{after}"))),
                }
            } else {
                match rest.split_once('/') {
                    Some((s, t)) => (s, Some(t)),
                    None => (rest, None),
                }
            };
            segments.push(parse_segment(segment, &mut names)?);
            match tail {
                Some("") => return Err(TemplateError::EmptySegment),
                Some(t) => rest = t,
                None => break,
            }
        }
        Ok(PathTemplate { segments })
    }

    /// The template's shape: `/shelves/*/**` (variable names left out). Two templates of the
    /// same shape match the same paths.
    pub fn shape(&self) -> String {
        if self.segments.is_empty() {
            return "/".to_string();
        }
        let mut s = String::new();
        for seg in &self.segments {
            s.push('/');
            match seg {
                Segment::Literal(l) => s.push_str(l),
                Segment::Single(_) => s.push('*'),
                Segment::Rest(_) => s.push_str("**"),
            }
        }
        s
    }
}

fn parse_segment<'t>(segment: &'t str, names: &mut Vec<&'t str>) -> Result<Segment, TemplateError> {
    if segment.is_empty() {
        return Err(TemplateError::EmptySegment);
    }
    if segment.contains(':') {
        return Err(TemplateError::Verb);
    }
    match segment {
        "*" => return Ok(Segment::Single(None)),
        "**" => return Ok(Segment::Rest(None)),
        _ => {}
    }
    if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        let (name, pattern) = match inner.split_once('=') {
            Some((n, p)) => (n.trim(), Some(p.trim())),
            None => (inner.trim(), None),
        };
        if !is_name(name) {
            return Err(TemplateError::BadName(name.to_string()));
        }
        if names.contains(&name) {
            return Err(TemplateError::DuplicateName(name.to_string()));
        }
        names.push(name);
        return match pattern {
            None | Some("*") => Ok(Segment::Single(Some(name.to_string()))),
            Some("**") => Ok(Segment::Rest(Some(name.to_string()))),
            Some(p) => Err(TemplateError::UnsupportedPattern {
                name: name.to_string(),
                pattern: p.to_string(),
            }),
        };
    }
    if segment.contains(['{', '}', '*']) {
        return Err(TemplateError::BadLiteral(segment.to_string()));
    }
    Ok(Segment::Literal(decode(segment, false).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Segment {
        Segment::Literal(s.to_string())
    }

    #[test]
    fn parses_the_supported_forms() {
        let t = PathTemplate::parse("/shelves/{shelf}/books/{book=*}/*/{rest=**}").unwrap();
        assert_eq!(
            t.segments,
            vec![
                lit("shelves"),
                Segment::Single(Some("shelf".into())),
                lit("books"),
                Segment::Single(Some("book".into())),
                Segment::Single(None),
                Segment::Rest(Some("rest".into())),
            ]
        );
        assert_eq!(t.shape(), "/shelves/*/books/*/*/**");
        assert_eq!(PathTemplate::parse("/").unwrap().segments, vec![]);
        assert_eq!(PathTemplate::parse("/a/").unwrap().segments, vec![lit("a")]);
        assert_eq!(
            PathTemplate::parse("/a%20b").unwrap().segments,
            vec![lit("a b")]
        );
        assert_eq!(
            PathTemplate::parse("/**").unwrap().segments,
            vec![Segment::Rest(None)]
        );
        assert_eq!(
            PathTemplate::parse("/{book.name}").unwrap().segments,
            vec![Segment::Single(Some("book.name".into()))]
        );
    }
}
