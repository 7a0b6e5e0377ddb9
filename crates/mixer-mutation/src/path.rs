//! JSON paths and the edits made through them. A path is a JSON pointer (`/book/title`,
//! RFC 6901 with `~0` / `~1` escapes) or a dotted path (`book.title`); a numeric segment
//! indexes an array, and `-` (or the array's length) appends to one.

use serde_json::{Map, Value as Json};

/// A parsed JSON path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    segments: Vec<String>,
    /// The path as written, for messages.
    text: String,
}

impl JsonPath {
    /// Parses a pointer (starts with `/`) or a dotted path. The empty path is refused: edits
    /// name a field, never the whole document.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let segments: Vec<String> = if let Some(rest) = text.strip_prefix('/') {
            rest.split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect()
        } else {
            if text.is_empty() {
                return Err("the path is empty".to_string());
            }
            let segs: Vec<String> = text.split('.').map(str::to_string).collect();
            if segs.iter().any(String::is_empty) {
                return Err(format!("`{text}` has an empty segment"));
            }
            segs
        };
        Ok(JsonPath {
            segments,
            text: text.to_string(),
        })
    }

    /// A path from segments (`text` is what messages show).
    pub fn from_segments(segments: Vec<String>, text: String) -> JsonPath {
        JsonPath { segments, text }
    }

    /// The segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The path as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value at the path.
    pub fn get<'a>(&self, doc: &'a Json) -> Option<&'a Json> {
        get_in(doc, &self.segments)
    }

    /// Sets the value at the path, creating missing objects on the way (a `null` on the way is
    /// replaced by an object). Fails when the way crosses a scalar or an array index out of range.
    pub fn set(&self, doc: &mut Json, value: Json) -> Result<(), String> {
        let Some((last, parents)) = self.segments.split_last() else {
            *doc = value;
            return Ok(());
        };
        let mut cur = doc;
        for (depth, seg) in parents.iter().enumerate() {
            if cur.is_null() {
                *cur = Json::Object(Map::new());
            }
            cur = match cur {
                Json::Object(m) => m
                    .entry(seg.clone())
                    .or_insert_with(|| Json::Object(Map::new())),
                Json::Array(a) => {
                    let len = a.len();
                    match array_index(seg, len).filter(|&i| i < len) {
                        Some(i) => &mut a[i],
                        None => return Err(self.bad_index(depth, len)),
                    }
                }
                other => return Err(self.not_container(depth, other)),
            };
        }
        if cur.is_null() {
            *cur = Json::Object(Map::new());
        }
        match cur {
            Json::Object(m) => {
                m.insert(last.clone(), value);
                Ok(())
            }
            Json::Array(a) => {
                let len = a.len();
                match array_index(last, len) {
                    Some(i) if i < len => a[i] = value,
                    Some(_) => a.push(value),
                    None => return Err(self.bad_index(parents.len(), len)),
                }
                Ok(())
            }
            other => Err(self.not_container(parents.len(), other)),
        }
    }

    /// Removes and returns the value at the path (`None` when there is none).
    pub fn remove(&self, doc: &mut Json) -> Option<Json> {
        let (last, parents) = self.segments.split_last()?;
        let mut cur = doc;
        for seg in parents {
            cur = match cur {
                Json::Object(m) => m.get_mut(seg)?,
                Json::Array(a) => {
                    let i = seg.parse::<usize>().ok()?;
                    a.get_mut(i)?
                }
                _ => return None,
            };
        }
        match cur {
            Json::Object(m) => m.remove(last),
            Json::Array(a) => {
                let i = last.parse::<usize>().ok().filter(|&i| i < a.len())?;
                Some(a.remove(i))
            }
            _ => None,
        }
    }

    fn prefix(&self, depth: usize) -> String {
        self.segments[..=depth.min(self.segments.len().saturating_sub(1))].join(".")
    }

    fn bad_index(&self, depth: usize, len: usize) -> String {
        format!(
            "cannot set `{}`: `{}` is not an index of a list of {len}",
            self.text,
            self.prefix(depth)
        )
    }

    fn not_container(&self, depth: usize, found: &Json) -> String {
        let at = if depth == 0 {
            "the document".to_string()
        } else {
            format!("`{}`", self.segments[..depth].join("."))
        };
        format!(
            "cannot set `{}`: {at} is {}, not an object",
            self.text,
            kind(found)
        )
    }
}

/// The value at `segments` below `doc`.
pub fn get_in<'a>(doc: &'a Json, segments: &[String]) -> Option<&'a Json> {
    let mut cur = doc;
    for seg in segments {
        cur = match cur {
            Json::Object(m) => m.get(seg)?,
            Json::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn array_index(seg: &str, len: usize) -> Option<usize> {
    if seg == "-" {
        return Some(len);
    }
    seg.parse::<usize>().ok().filter(|&i| i <= len)
}

/// `a string`, `a number`, ... for messages.
pub fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> JsonPath {
        JsonPath::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pointers_and_dotted_paths_address_the_same_fields() {
        let doc = json!({"a": {"b/c": 1, "list": [10, 20]}, "x~y": 2});
        assert_eq!(p("/a/b~1c").get(&doc), Some(&json!(1)));
        assert_eq!(p("/x~0y").get(&doc), Some(&json!(2)));
        assert_eq!(p("a.list.1").get(&doc), Some(&json!(20)));
        assert_eq!(p("/a/list/1").get(&doc), Some(&json!(20)));
        assert_eq!(p("a.missing").get(&doc), None);
        assert!(JsonPath::parse("").is_err());
        assert!(JsonPath::parse("a..b").is_err());
    }

    #[test]
    fn set_creates_objects_and_appends_to_lists() {
        let mut doc = json!({"list": [1]});
        p("a.b.c")
            .set(&mut doc, json!("x"))
            .unwrap_or_else(|e| panic!("{e}"));
        p("/list/-")
            .set(&mut doc, json!(2))
            .unwrap_or_else(|e| panic!("{e}"));
        p("list.0")
            .set(&mut doc, json!(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(doc, json!({"a": {"b": {"c": "x"}}, "list": [0, 2]}));
        let err = p("list.5").set(&mut doc, json!(1)).unwrap_err();
        assert!(err.contains("not an index"), "{err}");
        let err = p("a.b.c.d").set(&mut doc, json!(1)).unwrap_err();
        assert!(err.contains("`a.b.c` is a string"), "{err}");
    }

    #[test]
    fn remove_returns_the_value() {
        let mut doc = json!({"a": {"b": 1}, "l": [1, 2, 3]});
        assert_eq!(p("a.b").remove(&mut doc), Some(json!(1)));
        assert_eq!(p("l.1").remove(&mut doc), Some(json!(2)));
        assert_eq!(p("l.9").remove(&mut doc), None);
        assert_eq!(p("zz.q").remove(&mut doc), None);
        assert_eq!(doc, json!({"a": {}, "l": [1, 3]}));
    }
}
