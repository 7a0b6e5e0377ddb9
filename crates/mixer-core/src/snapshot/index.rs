//! The rule index: a request evaluates only the rules that can match it.
//!
//! Most Mixer rules are guarded by an equality on a string attribute somewhere in a top-level
//! `&&` chain (`destination.service.name == "reviews" && ...`, `context.protocol == "http"`,
//! `destination.labels["app"] == "ratings"`). Such a conjunct must hold for the rule to match, so
//! the rule is filed under that attribute's value; a request looks each guarded attribute up once
//! and gets the candidate rules from a hash map. Rules without a usable guard are always
//! candidates. Candidates are visited in config order, so results do not change.

use std::collections::HashMap;

use mixer_attr::{AttrId, Bag, ReferenceRecorder, Value, ValueType, Vocabulary};
use mixer_expr::ast::{BinaryOp, Expr, Lit};

/// An equality a rule's predicate requires: `attr == value` or `attr[key] == value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Guard {
    attr: AttrId,
    map_key: Option<String>,
    value: String,
}

fn lit_str(e: &Expr) -> Option<&str> {
    match e {
        Expr::Lit {
            value: Lit::Str(s), ..
        } => Some(s),
        _ => None,
    }
}

/// The attribute (and map key) `e` reads directly, when it is a STRING or a STRING_MAP entry.
fn selector(e: &Expr, vocab: &Vocabulary) -> Option<(AttrId, Option<String>)> {
    match e {
        Expr::Ident { name, .. } => match vocab.lookup_typed(name)? {
            (id, ValueType::String) => Some((id, None)),
            _ => None,
        },
        Expr::Index { target, key, .. } => match (&**target, lit_str(key)) {
            (Expr::Ident { name, .. }, Some(k)) => match vocab.lookup_typed(name)? {
                (id, ValueType::StringMap) => Some((id, Some(k.to_string()))),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// The first guard in the top-level `&&` chain of `predicate`, if any.
pub(crate) fn guard_of(predicate: &str, vocab: &Vocabulary) -> Option<Guard> {
    let ast = mixer_expr::parse(predicate).ok()?;
    find_guard(&ast, vocab)
}

fn find_guard(e: &Expr, vocab: &Vocabulary) -> Option<Guard> {
    match e {
        Expr::Binary {
            op: BinaryOp::LAnd,
            lhs,
            rhs,
            ..
        } => find_guard(lhs, vocab).or_else(|| find_guard(rhs, vocab)),
        Expr::Binary {
            op: BinaryOp::Eq,
            lhs,
            rhs,
            ..
        } => {
            let (sel, value) = match (selector(lhs, vocab), lit_str(rhs)) {
                (Some(sel), Some(v)) => (sel, v),
                _ => (selector(rhs, vocab)?, lit_str(lhs)?),
            };
            Some(Guard {
                attr: sel.0,
                map_key: sel.1,
                value: value.to_string(),
            })
        }
        _ => None,
    }
}

#[derive(Debug)]
struct Selector {
    attr: AttrId,
    map_key: Option<String>,
    by_value: HashMap<String, Vec<usize>>,
}

/// Candidate rules by guard.
#[derive(Debug, Default)]
pub struct RuleIndex {
    words: usize,
    always: Vec<u64>,
    selectors: Vec<Selector>,
}

impl RuleIndex {
    /// Files `rules` (one optional guard each, in rule order).
    pub(crate) fn build(guards: &[Option<Guard>]) -> RuleIndex {
        let words = guards.len().div_ceil(64);
        let mut index = RuleIndex {
            words,
            always: vec![0; words],
            selectors: Vec::new(),
        };
        for (i, g) in guards.iter().enumerate() {
            match g {
                None => index.always[i / 64] |= 1 << (i % 64),
                Some(g) => {
                    let pos = match index
                        .selectors
                        .iter()
                        .position(|s| s.attr == g.attr && s.map_key == g.map_key)
                    {
                        Some(p) => p,
                        None => {
                            index.selectors.push(Selector {
                                attr: g.attr,
                                map_key: g.map_key.clone(),
                                by_value: HashMap::new(),
                            });
                            index.selectors.len() - 1
                        }
                    };
                    index.selectors[pos]
                        .by_value
                        .entry(g.value.clone())
                        .or_default()
                        .push(i);
                }
            }
        }
        index
    }

    /// Number of rules filed under a guard.
    pub fn indexed_rules(&self) -> usize {
        self.selectors
            .iter()
            .flat_map(|s| s.by_value.values())
            .map(Vec::len)
            .sum()
    }

    /// Fills `out` with the candidate rules of the request in `bag` (a bitset in rule order),
    /// recording the guard attributes it read.
    pub fn candidates(&self, bag: &dyn Bag, refs: &mut impl ReferenceRecorder, out: &mut Vec<u64>) {
        out.clear();
        out.extend_from_slice(&self.always);
        for s in &self.selectors {
            let value = bag.get(s.attr);
            refs.attribute(s.attr, value.is_some());
            let text = match (&s.map_key, &value) {
                (None, Some(v)) => v.as_str(),
                (Some(k), Some(Value::StringMap(m))) => {
                    let found = m.get(k);
                    refs.map_key(s.attr, k, found.is_some());
                    found
                }
                _ => None,
            };
            if let Some(rules) = text.and_then(|t| s.by_value.get(t)) {
                for &i in rules {
                    out[i / 64] |= 1 << (i % 64);
                }
            }
        }
        debug_assert_eq!(out.len(), self.words);
    }
}

/// Iterates the set bits of a candidate bitset in increasing order.
pub fn each_candidate(bits: &[u64]) -> impl Iterator<Item = usize> + '_ {
    bits.iter().enumerate().flat_map(|(w, &word)| {
        let mut word = word;
        std::iter::from_fn(move || {
            if word == 0 {
                return None;
            }
            let b = word.trailing_zeros() as usize;
            word &= word - 1;
            Some(w * 64 + b)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer_attr::{Attributes, ReferencedAttributes, StringMap, well_known as wk};

    #[test]
    fn guards_come_from_top_level_conjunctions() {
        let v = Vocabulary::istio();
        let g = guard_of(
            r#"request.path == "/x" && destination.service.name == "reviews""#,
            &v,
        )
        .unwrap();
        assert_eq!((g.attr, g.value.as_str()), (wk::REQUEST_PATH, "/x"));
        let g = guard_of(r#""ratings" == destination.labels["app"]"#, &v).unwrap();
        assert_eq!(
            (g.attr, g.map_key.as_deref(), g.value.as_str()),
            (wk::DESTINATION_LABELS, Some("app"), "ratings")
        );
        for unguarded in [
            r#"a == "b" || destination.service.name == "x""#,
            r#"(destination.labels["app"] | "unknown") == "ratings""#,
            r#"response.code == 200"#,
            r#"destination.service.name != "x""#,
            "true",
        ] {
            assert!(guard_of(unguarded, &v).is_none(), "{unguarded}");
        }
    }

    #[test]
    fn candidates_in_rule_order() {
        let v = Vocabulary::istio();
        let guards: Vec<Option<Guard>> = [
            r#"destination.service.name == "a""#,
            "true",
            r#"destination.service.name == "b""#,
            r#"destination.labels["app"] == "a""#,
            r#"destination.service.name == "a" && request.path == "/""#,
        ]
        .iter()
        .map(|p| guard_of(p, &v))
        .collect();
        let index = RuleIndex::build(&guards);
        assert_eq!(index.indexed_rules(), 4);
        let labels: StringMap = [("app".to_string(), "a".to_string())].into_iter().collect();
        let bag = Attributes::new()
            .with(wk::DESTINATION_SERVICE_NAME, Value::str("a"))
            .with(wk::DESTINATION_LABELS, Value::string_map(labels));
        let mut refs = ReferencedAttributes::new();
        let mut bits = Vec::new();
        index.candidates(&bag, &mut refs, &mut bits);
        assert_eq!(each_candidate(&bits).collect::<Vec<_>>(), [0, 1, 3, 4]);
        assert_eq!(
            refs.to_strings(&v),
            [
                "destination.service.name",
                "destination.labels",
                "destination.labels[app]"
            ]
        );
        index.candidates(&Attributes::new(), &mut refs, &mut bits);
        assert_eq!(each_candidate(&bits).collect::<Vec<_>>(), [1]);
    }
}
