//! Where each config object and field came from, so errors that only know `(object, field)` can
//! be given a `file:line:column`.

use std::collections::HashMap;
use std::sync::Arc;

use mixer_core::ConfigError;

/// Where a field's value is, and (for a scalar written on one line without escapes) where its
/// text starts, so a position inside an expression maps to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldLoc {
    pub line: u32,
    pub col: u32,
    /// Line and column of the first character of the scalar's text, when the text appears
    /// verbatim on that one line of the source.
    pub text_start: Option<(u32, u32)>,
}

/// One definition of an object (a document).
#[derive(Clone, Debug)]
pub(crate) struct ObjectSource {
    pub file: Arc<str>,
    /// Start of the document (`None` for protobuf input).
    pub start: Option<(u32, u32)>,
    /// Field path (as [`ConfigError::field`] names it) -> location.
    pub fields: HashMap<String, FieldLoc>,
}

/// Source positions of every object of a loaded config, keyed like [`ConfigError::object`]
/// (`kind/namespace/name`).
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    objects: HashMap<String, Vec<ObjectSource>>,
}

impl SourceMap {
    pub(crate) fn add(&mut self, object: String, source: ObjectSource) {
        self.objects.entry(object).or_default().push(source);
    }

    pub(crate) fn merge(&mut self, other: SourceMap) {
        for (k, mut v) in other.objects {
            self.objects.entry(k).or_default().append(&mut v);
        }
    }

    /// Number of objects (documents) recorded.
    pub fn len(&self) -> usize {
        self.objects.values().map(Vec::len).sum()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The file an object was defined in (its first definition).
    pub fn file_of(&self, object: &str) -> Option<&str> {
        self.objects
            .get(object)
            .and_then(|v| v.first())
            .map(|s| &*s.file)
    }

    /// `(file, line, column)` of `field` of `object`: the field's value, else its closest
    /// enclosing field that was written, else the start of the object's document.
    pub fn position(&self, object: &str, field: &str) -> Option<(String, u32, u32)> {
        let src = self.pick(object, field)?;
        if let Some(loc) = lookup(src, field) {
            return Some((src.file.to_string(), loc.line, loc.col));
        }
        src.start.map(|(l, c)| (src.file.to_string(), l, c))
    }

    /// Fills `err.location` from its object and field, unless it already has one. For an
    /// expression error (`expression `...`: L:C: ...`) in a one-line scalar, the position points
    /// at the offending character inside the YAML value.
    pub fn locate(&self, err: &mut ConfigError) {
        if err.location.is_some() {
            return;
        }
        let Some(src) = self.pick(&err.object, &err.field) else {
            return;
        };
        let Some(loc) = lookup(src, &err.field) else {
            err.location = src.start.map(|(l, c)| (src.file.to_string(), l, c));
            return;
        };
        let (mut line, mut col) = (loc.line, loc.col);
        if let (Some((tl, tc)), Some((el, ec))) =
            (loc.text_start, expression_position(&err.message))
            && el == 1
        {
            line = tl;
            col = tc.saturating_add(ec.saturating_sub(1));
        }
        err.location = Some((src.file.to_string(), line, col));
    }

    fn pick(&self, object: &str, field: &str) -> Option<&ObjectSource> {
        let defs = self.objects.get(object)?;
        // A duplicate-name error is about the later definition; anything else about the first.
        if field == "name" {
            defs.last()
        } else {
            defs.first()
        }
    }
}

/// The field, or the closest enclosing one that was recorded (`a.b[2].c` -> `a.b[2]` -> `a.b`
/// -> `a`).
fn lookup<'s>(src: &'s ObjectSource, field: &str) -> Option<&'s FieldLoc> {
    let mut f = field;
    loop {
        if let Some(loc) = src.fields.get(f) {
            return Some(loc);
        }
        let cut = f.rfind(['.', '['])?;
        f = &f[..cut];
        if f.is_empty() {
            return None;
        }
    }
}

/// `L:C` of an expression compile error as mixer-core words it:
/// ``expression `SOURCE`: L:C: message``.
fn expression_position(message: &str) -> Option<(u32, u32)> {
    let rest = message.strip_prefix("expression `")?;
    for (i, _) in rest.match_indices("`: ") {
        let tail = &rest[i + 3..];
        let mut parts = tail.splitn(3, ':');
        let (Some(l), Some(c), Some(after)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if let (Ok(l), Ok(c)) = (l.parse::<u32>(), c.parse::<u32>())
            && after.starts_with(' ')
        {
            return Some((l, c));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expression_positions_parse() {
        assert_eq!(
            expression_position("expression `a == `: 1:6: expected a value"),
            Some((1, 6))
        );
        assert_eq!(
            expression_position("expression `x` is STRING, not BOOL"),
            None
        );
        assert_eq!(
            expression_position("expression `a`: b`: 2:3: x"),
            Some((2, 3))
        );
    }

    #[test]
    fn lookup_falls_back_to_enclosing_fields() {
        let mut fields = HashMap::new();
        fields.insert(
            "actions[0]".to_string(),
            FieldLoc {
                line: 5,
                col: 3,
                text_start: None,
            },
        );
        let src = ObjectSource {
            file: "f".into(),
            start: Some((1, 1)),
            fields,
        };
        assert_eq!(
            lookup(&src, "actions[0].instances[2]").map(|l| l.line),
            Some(5)
        );
        assert!(lookup(&src, "match").is_none());
    }
}
