//! The simple-form fast path ([`crate::vm::Shape`]) against the stack machine: the same value,
//! the same error and the same recorded references for every form and every kind of bag.

use mixer_attr::{
    Attributes, ReferencedAttributes, StringMap, Value, Vocabulary, well_known as wk,
};

use crate::vm::Shape;

fn bags() -> Vec<Attributes<'static>> {
    let labels: StringMap = [("app".to_string(), "reviews".to_string())]
        .into_iter()
        .collect();
    vec![
        Attributes::new(),
        Attributes::new()
            .with(wk::SOURCE_PRINCIPAL, Value::str("spiffe://a"))
            .with(wk::SOURCE_LABELS, Value::string_map(labels))
            .with(wk::REQUEST_SIZE, Value::Int64(42)),
        // Wrong types: a bag the caller filled badly.
        Attributes::new()
            .with(wk::SOURCE_PRINCIPAL, Value::Int64(7))
            .with(wk::SOURCE_LABELS, Value::str("not a map"))
            .with(wk::REQUEST_SIZE, Value::str("42")),
        Attributes::new().with(wk::SOURCE_LABELS, Value::string_map(StringMap::new())),
    ]
}

#[test]
fn simple_forms_match_the_stack_machine() {
    let vocab = Vocabulary::istio();
    let cases = [
        ("source.principal", true),
        ("source.principal | \"\"", true),
        ("source.principal | \"unknown\"", true),
        ("request.size | 0", true),
        ("source.labels[\"app\"] | \"none\"", true),
        ("source.labels[\"version\"] | \"none\"", true),
        ("source.labels | emptyStringMap()", true),
        ("\"constant\"", true),
        ("42", true),
        // General programs keep the stack machine.
        ("source.labels[\"app\"]", false),
        ("source.principal | source.labels[\"app\"] | \"x\"", false),
        ("request.size + 1", false),
    ];
    for (text, simple) in cases {
        let e = crate::compile(text, &vocab).unwrap_or_else(|err| panic!("{text}: {err}"));
        let program = &e.inner.program;
        assert_eq!(
            program.shape != Shape::General,
            simple,
            "{text}: {:?}",
            program.shape
        );
        for (i, bag) in bags().iter().enumerate() {
            let mut fast_refs = ReferencedAttributes::new();
            let mut stack_refs = ReferencedAttributes::new();
            let fast = program.run(bag, &mut fast_refs);
            let stack = program.run_stack(bag, &mut stack_refs);
            assert_eq!(fast, stack, "{text}, bag {i}");
            assert_eq!(fast_refs.sorted(), stack_refs.sorted(), "{text}, bag {i}");
        }
    }
}

#[test]
fn attribute_or_read_in_place_and_eval_inline_give_what_eval_gives() {
    let vocab = Vocabulary::istio();
    for text in [
        "source.principal | \"\"",
        "request.size | 0",
        "source.labels | emptyStringMap()",
    ] {
        let e = crate::compile(text, &vocab).unwrap();
        let (id, ty, default) = e.attribute_or().unwrap_or_else(|| panic!("{text}"));
        for bag in bags() {
            // What a caller does with it: the stored value of the right type, or the default
            // when none is stored; anything else goes to `eval`.
            let direct = match mixer_attr::Bag::get_stored(&bag, id) {
                Some(Some(v)) if v.value_type() == ty => Some(v.reborrow()),
                Some(None) => Some(default.reborrow()),
                _ => None,
            };
            match direct {
                Some(v) => assert_eq!(Ok(v), e.eval(&bag, &mut ()), "{text} on {bag:?}"),
                None => assert!(e.eval(&bag, &mut ()).is_err(), "{text} on {bag:?}"),
            }
            // `eval_inline` does that: same value or error, same recorded references.
            let (mut r1, mut r2) = (ReferencedAttributes::new(), ReferencedAttributes::new());
            assert_eq!(
                e.eval_inline(&bag, &mut r1),
                e.eval(&bag, &mut r2),
                "{text}"
            );
            assert_eq!(r1, r2, "{text} on {bag:?}");
        }
    }
    for text in [
        "source.principal",
        "source.labels[\"app\"] | \"\"",
        "\"x\"",
        "a | b",
    ] {
        let Ok(e) = crate::compile(text, &vocab) else {
            continue;
        };
        assert!(e.attribute_or().is_none(), "{text}");
    }
}
