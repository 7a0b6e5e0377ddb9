//! Which entries of STRING_MAP attributes the report path reads, found at config time: a map
//! that every expression reads only at constant keys (`request.headers["x-request-id"]`) is
//! captured by a deferred report as just those keys (looked up through the host's own map view,
//! so its key semantics are kept); any other use (`source.labels | emptyStringMap()`, a map
//! passed to a function) captures the whole map.

use std::collections::{BTreeSet, HashMap};

use mixer_attr::{AttrId, ValueType, Vocabulary};
use mixer_expr::Expression;
use mixer_expr::ast::{Expr, Lit};

/// How the report path reads one attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MapUse {
    /// The whole value (every non-map attribute, and maps read other than at constant keys).
    Whole,
    /// Only these keys of a STRING_MAP attribute.
    Keys(Box<[Box<str>]>),
}

enum Seen {
    Whole,
    Keys(BTreeSet<String>),
}

/// How `exprs` read each STRING_MAP attribute they mention (attributes not in the result are
/// read whole).
pub(crate) fn map_uses(exprs: &[&Expression], vocab: &Vocabulary) -> HashMap<AttrId, MapUse> {
    let mut seen: HashMap<AttrId, Seen> = HashMap::new();
    for e in exprs {
        match mixer_expr::parse(e.source()) {
            Ok(ast) => walk(&ast, vocab, &mut seen),
            // Compiled expressions parse; be conservative all the same.
            Err(_) => {
                for id in e.attributes() {
                    seen.insert(*id, Seen::Whole);
                }
            }
        }
    }
    seen.into_iter()
        .map(|(id, s)| {
            let u = match s {
                Seen::Whole => MapUse::Whole,
                Seen::Keys(k) => MapUse::Keys(k.into_iter().map(String::into_boxed_str).collect()),
            };
            (id, u)
        })
        .collect()
}

fn map_attr(name: &str, vocab: &Vocabulary) -> Option<AttrId> {
    match vocab.lookup_typed(name)? {
        (id, ValueType::StringMap) => Some(id),
        _ => None,
    }
}

fn walk(e: &Expr, vocab: &Vocabulary, seen: &mut HashMap<AttrId, Seen>) {
    match e {
        Expr::Lit { .. } => {}
        Expr::Ident { name, .. } => {
            if let Some(id) = map_attr(name, vocab) {
                seen.insert(id, Seen::Whole);
            }
        }
        Expr::Index { target, key, .. } => {
            if let (
                Expr::Ident { name, .. },
                Expr::Lit {
                    value: Lit::Str(k), ..
                },
            ) = (&**target, &**key)
                && let Some(id) = map_attr(name, vocab)
            {
                match seen
                    .entry(id)
                    .or_insert_with(|| Seen::Keys(BTreeSet::new()))
                {
                    Seen::Whole => {}
                    Seen::Keys(keys) => {
                        keys.insert(k.clone());
                    }
                }
                return;
            }
            walk(target, vocab, seen);
            walk(key, vocab, seen);
        }
        Expr::Call { args, .. } => {
            for a in args {
                walk(a, vocab, seen);
            }
        }
        Expr::Method { target, args, .. } => {
            walk(target, vocab, seen);
            for a in args {
                walk(a, vocab, seen);
            }
        }
        Expr::Unary { operand, .. } => walk(operand, vocab, seen),
        Expr::Binary { lhs, rhs, .. } => {
            walk(lhs, vocab, seen);
            walk(rhs, vocab, seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(sources: &[&str]) -> Vec<(String, MapUse)> {
        let vocab = Vocabulary::istio();
        let exprs: Vec<Expression> = sources
            .iter()
            .map(|s| mixer_expr::compile(s, &vocab).unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect();
        let refs: Vec<&Expression> = exprs.iter().collect();
        let mut out: Vec<(String, MapUse)> = map_uses(&refs, &vocab)
            .into_iter()
            .map(|(id, u)| (vocab.name(id).to_string(), u))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn keys(k: &[&str]) -> MapUse {
        MapUse::Keys(k.iter().map(|s| Box::from(*s)).collect())
    }

    #[test]
    fn constant_keys_only_unless_the_map_is_used_whole() {
        let u = uses(&[
            r#"request.headers["x-request-id"] | """#,
            r#"request.headers[":authority"] | request.host | """#,
            r#"source.labels["app"] | "unknown""#,
            r#"source.labels | emptyStringMap()"#,
            r#"destination.labels["version"] == "v1" && destination.labels["app"] == "r""#,
        ]);
        assert_eq!(
            u,
            vec![
                ("destination.labels".into(), keys(&["app", "version"])),
                (
                    "request.headers".into(),
                    keys(&[":authority", "x-request-id"])
                ),
                ("source.labels".into(), MapUse::Whole),
            ]
        );
    }

    #[test]
    fn a_computed_key_reads_the_whole_map() {
        let u = uses(&[r#"request.headers[source.name | "x"] | """#]);
        assert_eq!(u, vec![("request.headers".into(), MapUse::Whole)]);
    }
}
