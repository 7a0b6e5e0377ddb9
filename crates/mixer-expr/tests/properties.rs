//! Property tests: printing a parsed tree and parsing it again gives the same tree; compiling and
//! evaluating generated expressions against generated bags never panics and respects the
//! declared result type and attribute set.

use std::borrow::Cow;
use std::net::IpAddr;

use mixer_attr::{
    Attributes, Duration, ReferencedAttributes, StringMap, Timestamp, Value, ValueType,
};
use mixer_expr::ast::{BinaryOp, Expr, Lit, Pos, UnaryOp};
use proptest::prelude::*;

const P: Pos = Pos { line: 1, column: 1 };

fn names() -> Vec<&'static str> {
    mixer_expr::FUZZ_MANIFEST
        .iter()
        .map(|(n, _)| *n)
        .chain(["x", "a.b.c", "$out.y"])
        .collect()
}

fn lit() -> impl Strategy<Value = Lit> {
    prop_oneof![
        "[a-z*. \"\\\\\n\t\u{e9}\u{2603}\u{1}-]{0,8}".prop_map(Lit::Str),
        any::<i64>().prop_map(Lit::Int),
        any::<f64>()
            .prop_filter("finite", |d| d.is_finite())
            .prop_map(Lit::Double),
        (-1000i32..1000).prop_map(|i| Lit::Double(f64::from(i) / 8.0)),
        any::<bool>().prop_map(Lit::Bool),
        Just(Lit::Str("10ms".into())),
        Just(Lit::Str("1.2.3.4".into())),
    ]
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        lit().prop_map(|value| Expr::Lit { pos: P, value }),
        prop::sample::select(names()).prop_map(|n| Expr::Ident {
            pos: P,
            name: n.to_string()
        }),
    ]
}

fn binop() -> impl Strategy<Value = BinaryOp> {
    prop::sample::select(vec![
        BinaryOp::LOr,
        BinaryOp::LAnd,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Or,
        BinaryOp::Or,
        BinaryOp::Mul,
        BinaryOp::Div,
    ])
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(6, 48, 3, |inner| {
        let b = |e: Expr| Box::new(e);
        prop_oneof![
            (binop(), inner.clone(), inner.clone()).prop_map(move |(op, l, r)| Expr::Binary {
                pos: P,
                op,
                lhs: b(l),
                rhs: b(r)
            }),
            (
                prop::sample::select(vec![UnaryOp::Not, UnaryOp::Neg]),
                inner.clone()
            )
                .prop_map(move |(op, e)| Expr::Unary {
                    pos: P,
                    op,
                    operand: b(e)
                }),
            (inner.clone(), inner.clone()).prop_map(move |(t, k)| Expr::Index {
                pos: P,
                target: b(t),
                key: b(k)
            }),
            (
                prop::sample::select(vec![
                    "match",
                    "ip",
                    "timestamp",
                    "email",
                    "dnsName",
                    "uri",
                    "size",
                    "toLower",
                    "conditional",
                    "emptyStringMap",
                    "nosuch",
                ]),
                prop::collection::vec(inner.clone(), 0..4)
            )
                .prop_map(|(name, args)| Expr::Call {
                    pos: P,
                    name: name.to_string(),
                    args
                }),
            (
                inner.clone(),
                prop::sample::select(vec!["startsWith", "endsWith", "matches", "nosuch"]),
                prop::collection::vec(inner, 0..2)
            )
                .prop_map(move |(t, name, args)| Expr::Method {
                    pos: P,
                    target: b(t),
                    name: name.to_string(),
                    args
                }),
        ]
    })
}

/// Values of every type, so that bags can also hold values of the wrong type.
fn value() -> impl Strategy<Value = Value<'static>> {
    prop_oneof![
        "[a-z.*()\\[]{0,6}".prop_map(|s| Value::String(Cow::Owned(s))),
        any::<i64>().prop_map(Value::Int64),
        any::<f64>().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Timestamp(Timestamp::from_unix_nanos(n.into()))),
        any::<[u8; 4]>().prop_map(|b| Value::IpAddress(IpAddr::from(b))),
        any::<[u8; 16]>().prop_map(|b| Value::IpAddress(IpAddr::from(b))),
        "[a-z@.\"]{0,6}".prop_map(|s| Value::EmailAddress(Cow::Owned(s))),
        "[a-z:/.]{0,6}".prop_map(|s| Value::Uri(Cow::Owned(s))),
        "[a-zA-Z.-]{0,6}".prop_map(|s| Value::DnsName(Cow::Owned(s))),
        any::<i64>().prop_map(|n| Value::Duration(Duration::from_nanos(n))),
        prop::collection::btree_map("[ab]{0,2}", "[a-z]{0,3}", 0..3)
            .prop_map(|m: StringMap| Value::string_map(m)),
    ]
}

/// A bag over the fuzz manifest: each attribute absent, of its own type, or of any type.
fn bag() -> impl Strategy<Value = Attributes<'static>> {
    let n = mixer_expr::FUZZ_MANIFEST.len();
    prop::collection::vec((0u8..4, value()), n).prop_map(|slots| {
        let vocab = mixer_expr::fuzz_vocabulary();
        let mut bag = Attributes::new();
        for ((name, ty), (mode, v)) in mixer_expr::FUZZ_MANIFEST.iter().zip(slots) {
            let Some(id) = vocab.lookup(name) else {
                continue;
            };
            match mode {
                0 => {}
                1 => bag.set(id, v),
                _ => {
                    if v.value_type() == *ty {
                        bag.set(id, v)
                    } else if let Some(good) = sample_of(*ty) {
                        bag.set(id, good)
                    }
                }
            }
        }
        bag
    })
}

fn sample_of(ty: ValueType) -> Option<Value<'static>> {
    Some(match ty {
        ValueType::String => Value::str("st.*"),
        ValueType::Int64 => Value::Int64(i64::MAX),
        ValueType::Double => Value::Double(0.5),
        ValueType::Bool => Value::Bool(true),
        ValueType::Timestamp => Value::Timestamp(Timestamp::EPOCH),
        ValueType::IpAddress => Value::IpAddress(IpAddr::from([10, 0, 0, 1])),
        ValueType::EmailAddress => Value::EmailAddress(Cow::Borrowed("a@b.c")),
        ValueType::Uri => Value::Uri(Cow::Borrowed("http://a/b")),
        ValueType::DnsName => Value::DnsName(Cow::Borrowed("a.b")),
        ValueType::Duration => Value::Duration(Duration::from_millis(10)),
        ValueType::StringMap => {
            Value::string_map([("a".to_string(), "1".to_string())].into_iter().collect())
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_is_identity(e in expr()) {
        let printed = e.to_string();
        let again = mixer_expr::parse(&printed)
            .map_err(|err| TestCaseError::fail(format!("{printed:?}: {err}")))?;
        prop_assert_eq!(&again, &e, "printed as {:?}", printed);
        // And printing is stable.
        prop_assert_eq!(again.to_string(), printed);
    }

    #[test]
    fn evaluation_never_panics(e in expr(), bag in bag()) {
        let vocab = mixer_expr::fuzz_vocabulary();
        let source = e.to_string();
        if let Ok(compiled) = mixer_expr::compile(&source, &vocab) {
            let mut refs = ReferencedAttributes::new();
            if let Ok(v) = compiled.eval(&bag, &mut refs) {
                prop_assert_eq!(v.value_type(), compiled.result_type(), "{}", source);
            }
            for r in refs.iter() {
                prop_assert!(compiled.attributes().contains(&r.attr), "{}", source);
            }
            let _ = compiled.eval_bool(&bag, &mut ());
            if compiled.is_constant() {
                prop_assert!(refs.is_empty(), "constant {} read attributes", source);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(s in "[ -~\n\u{e9}]{0,64}", bag in bag()) {
        let vocab = mixer_expr::fuzz_vocabulary();
        if let Ok(compiled) = mixer_expr::compile(&s, &vocab) {
            let _ = compiled.eval(&bag, &mut ReferencedAttributes::new());
        }
        mixer_expr::fuzz_one(s.as_bytes());
    }
}
