//! Template syntax errors and bad params: each refused with an error naming the params field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mixer_apiattrs::{ApiAttributes, PathTemplate, TemplateError};
use serde_json::json;

#[test]
fn template_syntax_errors() {
    use TemplateError as E;
    let cases = [
        ("", E::Empty),
        ("shelves", E::NoLeadingSlash),
        ("/a//b", E::EmptySegment),
        ("/a//", E::EmptySegment),
        ("/**/a", E::RestNotLast),
        ("/{p=**}/a", E::RestNotLast),
        ("/v1/{name}:cancel", E::Verb),
        ("/v1/books:batchGet", E::Verb),
        ("/a?x={y}", E::Query),
        ("/a#frag", E::Query),
        ("/{shelf", E::Unterminated),
        ("/{}", E::BadName(String::new())),
        ("/{1abc}", E::BadName("1abc".into())),
        ("/{a-b}", E::BadName("a-b".into())),
        ("/{a}/{a}", E::DuplicateName("a".into())),
        (
            "/{name=shelves/*}",
            E::UnsupportedPattern {
                name: "name".into(),
                pattern: "shelves/*".into(),
            },
        ),
        (
            "/{name=books}",
            E::UnsupportedPattern {
                name: "name".into(),
                pattern: "books".into(),
            },
        ),
        ("/a*", E::BadLiteral("a*".into())),
        ("/{a}b", E::BadLiteral("{a}b".into())),
        ("/x}", E::BadLiteral("x}".into())),
        ("/***", E::BadLiteral("***".into())),
    ];
    for (text, want) in cases {
        assert_eq!(PathTemplate::parse(text), Err(want), "{text:?}");
    }
    let long = "/a".repeat(65);
    assert_eq!(PathTemplate::parse(&long), Err(E::TooLong));
    assert!(PathTemplate::parse(&"/a".repeat(64)).is_ok());
    // Error messages say what is wrong.
    assert_eq!(E::Verb.to_string(), "`:verb` suffixes are not supported");
}

fn error(params: serde_json::Value) -> (Option<String>, String) {
    let e = ApiAttributes::from_params(&params).unwrap_err();
    (e.field, e.message)
}

#[test]
fn bad_params_name_the_field() {
    let cases = [
        (json!({"service": 3}), "service", "must be a string"),
        (json!({"version": ""}), "version", "must not be empty"),
        (json!({"bogus": 1}), "bogus", "unknown field `bogus`"),
        (json!({"operations": {}}), "operations", "must be a list"),
        (
            json!({"operations": ["x"]}),
            "operations[0]",
            "must be a mapping",
        ),
        (
            json!({"operations": [{"method": "GET", "template": "/a"}]}),
            "operations[0]",
            "needs a `name`",
        ),
        (
            json!({"operations": [{"name": "a", "method": "GET"}]}),
            "operations[0]",
            "needs a `template`",
        ),
        (
            json!({"operations": [{"name": "a", "template": "/a"}, {"name": "b", "method": "GE T", "template": "/b"}]}),
            "operations[1].method",
            "`GE T` is not an HTTP method",
        ),
        (
            json!({"operations": [{"name": "a", "template": "/a", "verb": "x"}]}),
            "operations[0].verb",
            "unknown field `verb`",
        ),
        (
            json!({"operations": [{"name": "a", "template": "/a/{b"}]}),
            "operations[0].template",
            "`/a/{b`: variable `{` is not closed by `}`",
        ),
        (
            json!({"operations": [{"name": "cancel", "template": "/v1/{name}:cancel"}]}),
            "operations[0].template",
            "`:verb` suffixes are not supported",
        ),
        (
            json!({"patterns": [{"httpMethod": "GET", "uriTemplate": "/a"}]}),
            "patterns[0]",
            "needs `attributes: {api.operation: <name>}`",
        ),
        (
            json!({"patterns": [{"attributes": {"api.operation": "a"}, "regex": "^/a$"}]}),
            "patterns[0].regex",
            "regex patterns are not supported",
        ),
        (
            json!({"patterns": [{"attributes": {"api.service": "x"}, "uriTemplate": "/a"}]}),
            "patterns[0].attributes.api.service",
            "can only set `api.operation`",
        ),
        (
            json!({"patterns": [{"attributes": {"api.operation": "a"}, "uriTemplate": "/{x=a/b}"}]}),
            "patterns[0].uriTemplate",
            "only `*` and `**` are supported",
        ),
        (
            json!({"service": "a", "attributes": {"api.service": "b"}}),
            "service",
            "given twice",
        ),
        (
            json!({"attributes": {"api.operation": "x"}}),
            "attributes.api.operation",
            "is not one of api.service",
        ),
        (
            json!({"apiKeys": [{"query": "key"}]}),
            "apiKeys",
            "API keys are not read",
        ),
    ];
    for (params, field, message) in cases {
        let (f, m) = error(params.clone());
        assert_eq!(f.as_deref(), Some(field), "{params}: {m}");
        assert!(m.contains(message), "{params}: {m}");
    }
    let e = ApiAttributes::from_params(&json!([1])).unwrap_err();
    assert_eq!(e.field, None);
    assert!(e.message.contains("must be a mapping"), "{}", e.message);
}

#[test]
fn ambiguous_duplicates_are_refused() {
    // Same method and shape (variable names do not count): refused, naming both.
    let (f, m) = error(json!({"operations": [
        {"name": "getShelf", "method": "GET", "template": "/shelves/{shelf}"},
        {"name": "getShelf2", "method": "get", "template": "/shelves/{id=*}/"},
    ]}));
    assert_eq!(f.as_deref(), Some("operations[1]"));
    assert_eq!(
        m,
        "`getShelf2`: `getShelf` already has GET /shelves/*: the match would be ambiguous"
    );
    let (f, _) = error(json!({
        "operations": [{"name": "a", "template": "/files/**"}],
        "patterns": [{"attributes": {"api.operation": "b"}, "httpMethod": "*", "uriTemplate": "/files/{p=**}"}],
    }));
    assert_eq!(f.as_deref(), Some("patterns[0]"));
    // Same shape with different methods, or `*` beside a method, is not ambiguous.
    let ok = ApiAttributes::from_params(&json!({"operations": [
        {"name": "get", "method": "GET", "template": "/shelves/{shelf}"},
        {"name": "delete", "method": "DELETE", "template": "/shelves/{shelf}"},
        {"name": "other", "template": "/shelves/*"},
        {"name": "rest", "template": "/shelves/**"},
    ]}))
    .unwrap();
    assert_eq!(ok.matcher().len(), 4);
}

#[test]
fn empty_params_give_only_the_protocol() {
    let h = ApiAttributes::from_params(&serde_json::Value::Null).unwrap();
    assert!(h.matcher().is_empty());
    assert_eq!(h.operation("GET", "/"), None);
}
