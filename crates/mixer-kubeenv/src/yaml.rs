//! YAML inventory files to JSON values, bounded: anchors and aliases are refused (kubectl never
//! writes them, and expanding them is how a small file becomes a huge one), nesting is limited,
//! and scalars stay text (the object reader accepts numbers and booleans written as text), so
//! a label value such as `1.10` keeps its spelling.

use serde_json::{Map, Value as Json};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;

enum Frame {
    Seq(Vec<Json>),
    Map(Map<String, Json>, Option<String>),
}

/// Parses every document of `text`.
pub fn documents(text: &str) -> Result<Vec<Json>, String> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut docs = Vec::new();
    loop {
        let (event, marker) = parser
            .next_token()
            .map_err(|e| format!("invalid YAML at line {}: {}", e.marker().line(), e.info()))?;
        let at = |m: &str| format!("line {}: {m}", marker.line());
        let value = match event {
            Event::StreamEnd => return Ok(docs),
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {
                continue;
            }
            Event::Alias(_) => return Err(at("aliases are not supported in inventory files")),
            Event::Scalar(_, _, anchor, _)
            | Event::SequenceStart(anchor, _)
            | Event::MappingStart(anchor, _)
                if anchor != 0 =>
            {
                return Err(at("anchors are not supported in inventory files"));
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= MAX_DEPTH => {
                return Err(at("nesting is too deep"));
            }
            Event::SequenceStart(..) => {
                stack.push(Frame::Seq(Vec::new()));
                continue;
            }
            Event::MappingStart(..) => {
                stack.push(Frame::Map(Map::new(), None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(v)) => Json::Array(v),
                Some(Frame::Map(m, _)) => Json::Object(m),
                None => return Err(at("unbalanced collection")),
            },
            Event::Scalar(text, style, _, _) => {
                let plain_null = style == TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                if plain_null {
                    Json::Null
                } else {
                    Json::String(text)
                }
            }
        };
        match stack.last_mut() {
            None => docs.push(value),
            Some(Frame::Seq(v)) => v.push(value),
            Some(Frame::Map(m, key)) => match key.take() {
                None => match value {
                    Json::String(k) => *key = Some(k),
                    Json::Null => *key = Some(String::new()),
                    _ => return Err(at("mapping keys must be scalars")),
                },
                Some(k) => {
                    m.insert(k, value);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_become_json_with_text_scalars() {
        let docs = documents("a: 1\nb: [x, ~]\nc: {d: '1.10'}\n---\n- e\n").unwrap();
        assert_eq!(
            docs,
            [
                json!({"a": "1", "b": ["x", null], "c": {"d": "1.10"}}),
                json!(["e"])
            ]
        );
    }

    #[test]
    fn aliases_and_deep_nesting_are_refused() {
        let e = documents("a: &x [1]\nb: *x\n").unwrap_err();
        assert!(e.contains("anchors"), "{e}");
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(documents(&deep).unwrap_err().contains("too deep"));
        assert!(documents("a: [").is_err());
    }
}
