//! The public API: types, constants, attributes(), references, errors and limits.

use std::borrow::Cow;

use mixer_attr::{Attributes, ReferencedAttributes, StringMap, Value, ValueType, Vocabulary};
use mixer_expr::{CompileError, EvalError, compile, compile_expecting};

fn vocab() -> Vocabulary {
    let mut v = Vocabulary::istio();
    v.declare("$out.labels", ValueType::StringMap)
        .expect("declare");
    v
}

#[test]
fn evaluates_and_records_references() {
    let v = vocab();
    let e = compile(
        r#"request.headers["x"].startsWith("y") && source.ip == ip("10.0.0.1")"#,
        &v,
    )
    .expect("compile");
    assert_eq!(e.result_type(), ValueType::Bool);
    assert!(!e.is_constant());
    let names: Vec<&str> = e.attributes().iter().map(|id| v.name(*id)).collect();
    assert_eq!(names, ["request.headers", "source.ip"]);

    let headers: StringMap = [("x".to_string(), "yes".to_string())].into_iter().collect();
    let id = |n: &str| v.lookup(n).expect("attribute");
    let bag = Attributes::new()
        .with(id("request.headers"), Value::string_map(headers))
        .with(id("source.ip"), Value::IpAddress([10, 0, 0, 1].into()));
    let mut refs = ReferencedAttributes::new();
    assert!(e.eval_bool(&bag, &mut refs).expect("eval"));
    assert_eq!(
        refs.to_strings(&v),
        ["request.headers", "request.headers[x]", "source.ip"]
    );

    let mut refs = ReferencedAttributes::new();
    let empty = Attributes::new();
    let err = e.eval_bool(&empty, &mut refs).expect_err("absent map");
    assert!(
        matches!(err, EvalError::AttributeAbsent(ref n) if &**n == "request.headers"),
        "{err}"
    );
    assert_eq!(refs.to_strings(&v), ["-request.headers"]);
}

#[test]
fn default_operator_borrows_and_references_only_what_it_read() {
    let v = vocab();
    let e = compile(r#"source.user | $out.labels["app"] | "unknown""#, &v).expect("compile");
    let labels: StringMap = [("app".to_string(), "web".to_string())]
        .into_iter()
        .collect();
    let bag = Attributes::new().with(
        v.lookup("$out.labels").expect("id"),
        Value::string_map(labels),
    );
    let mut refs = ReferencedAttributes::new();
    let out = e.eval(&bag, &mut refs).expect("eval");
    assert_eq!(out, Value::str("web"));
    assert_eq!(
        refs.to_strings(&v),
        ["-source.user", "$out.labels", "$out.labels[app]"]
    );

    let host = String::from("reviews");
    let bag = Attributes::new().with(v.lookup("source.user").expect("id"), Value::str(&host));
    let out = e.eval(&bag, &mut ()).expect("eval");
    assert!(
        matches!(out, Value::String(Cow::Borrowed(_))),
        "borrowed from the bag"
    );
}

#[test]
fn constants_fold_and_durations_coerce() {
    let v = vocab();
    let e = compile(r#"toLower("A") + "b" == "ab" || source.user == "x""#, &v).expect("compile");
    assert!(e.is_constant());
    assert!(e.attributes().is_empty());
    assert_eq!(
        e.eval(&Attributes::new(), &mut ()).expect("eval"),
        Value::Bool(true)
    );

    let d = compile_expecting(r#""150ms""#, &v, ValueType::Duration).expect("duration literal");
    assert_eq!(d.result_type(), ValueType::Duration);
    let e = compile(r#"response.duration | "10ms""#, &v).expect("compile");
    assert_eq!(e.result_type(), ValueType::Duration);
    assert!(compile_expecting("response.code", &v, ValueType::String).is_err());
    assert_eq!(
        compile(r#"ip("10.1.12")"#, &v)
            .expect("not folded")
            .result_type(),
        ValueType::IpAddress
    );
}

#[test]
fn errors_name_the_position() {
    let v = vocab();
    let e: CompileError =
        compile("response.code == 200 &&\n  response.code == true", &v).expect_err("type");
    assert_eq!((e.line, e.column), (2, 17), "{e}");
    assert!(e.to_string().starts_with("2:17: "), "{e}");
    let e = compile("no.such.attr == 1", &v).expect_err("unknown");
    assert!(e.message.contains("no.such.attr"), "{e}");
    let e = compile("request.headers.host", &v).expect_err("field");
    assert!(e.message.contains("request.headers[\"host\"]"), "{e}");
    let e = compile(r#"request.path.matches("(")"#, &v);
    assert!(
        e.is_ok(),
        "the receiver is the pattern; a non-constant one is checked per request"
    );
    let e = compile(r#""(".matches(request.path)"#, &v).expect_err("bad constant regex");
    assert!(e.message.contains("regular expression"), "{e}");
    assert!(compile(&"(".repeat(65), &v).is_err());
}

#[test]
fn wrong_bag_types_and_non_bool_results_are_errors() {
    let v = vocab();
    let e = compile("response.code == 200", &v).expect("compile");
    let bag = Attributes::new().with(v.lookup("response.code").expect("id"), Value::str("200"));
    let err = e.eval_bool(&bag, &mut ()).expect_err("wrong type");
    assert!(matches!(err, EvalError::AttributeType { .. }), "{err}");
    let e = compile("response.code | 1", &v).expect("compile");
    assert!(matches!(
        e.eval_bool(&Attributes::new(), &mut ()),
        Err(EvalError::NotBool(ValueType::Int64))
    ));
    let e = compile("response.code + 9223372036854775807", &v).expect("compile");
    let bag = Attributes::new().with(v.lookup("response.code").expect("id"), Value::Int64(1));
    assert!(matches!(e.eval(&bag, &mut ()), Err(EvalError::Overflow(_))));
}

#[test]
fn expressions_are_send_sync_and_cheap_to_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<mixer_expr::Expression>();
}
