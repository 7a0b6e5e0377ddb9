//! Header operations, JSON edits and body templates of the `rewrite` adapter, through the
//! pipeline; header-only mutations stream the body through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bag, rewrite, worker};
use mixer_core::adapter::HeaderChange::{Append, Remove, Set};
use mixer_core::mutation::{Chunk, Direction};
use serde_json::json;

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn header_ops_take_constants_variables_and_templates() {
    let w = worker(
        json!({"request": {"headers": [
            {"set": "X-User", "var": "user"},
            {"append": "x-trace", "template": "id-{{vars.n}}-{{vars.user}}"},
            {"remove": "Cookie"},
            {"set": "x-num", "value": 3},
            {"set": "x-missing", "template": "{{vars.user2 | \"none\"}}"},
        ]}}),
        json!({"user": r#"request.headers["x-user"] | "nobody""#, "n": "42", "user2": r#"request.headers["nope"] | """#}),
    );
    let mut stream = w
        .mutation_stream(&bag(&[("x-user", "alice")]), Direction::Request)
        .unwrap();
    // Header-only: the changes are final before any body chunk, and chunks are forwarded.
    assert!(!stream.buffers_body());
    assert_eq!(stream.body_limit(), None);
    let want = vec![
        Set(s("x-user"), s("alice")),
        Append(s("x-trace"), s("id-42-alice")),
        Remove(s("cookie")),
        Set(s("x-num"), s("3")),
        Set(s("x-missing"), s("")),
    ];
    assert_eq!(stream.header_changes(), want.as_slice());
    for _ in 0..3 {
        assert_eq!(stream.push(&[b'x'; 4 << 20]).unwrap(), Chunk::Forward);
    }
    let m = stream.finish().unwrap();
    assert_eq!(m.header_changes, want);
    assert_eq!(m.body, None);
    // The handler has no response operations: responses are left alone.
    let m = w
        .mutate_message(&bag(&[]), Direction::Response, b"{}")
        .unwrap();
    assert_eq!(m, Default::default());
}

#[test]
fn a_header_value_with_a_line_break_is_refused() {
    let w = worker(
        json!({"request": {"headers": [{"set": "x-user", "var": "user"}]}}),
        json!({"user": r#"request.headers["x-user"]"#}),
    );
    let err = w
        .mutation_stream(&bag(&[("x-user", "a\r\nx-admin: 1")]), Direction::Request)
        .unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(err.to_string().contains("line break"), "{err}");
}

#[test]
fn json_edits_set_remove_move_and_rename() {
    let w = worker(
        json!({"max_body_bytes": 4096, "request": {"json": [
            {"set": "/meta/count", "var": "n"},
            {"set": "meta.user", "var": "user"},
            {"set": "meta.labels", "var": "labels"},
            {"set": "/meta/source", "value": {"kind": "rest", "v": [1, 2]}},
            {"set": "greeting", "template": "hello {{vars.user}} <{{body.name}}>"},
            {"set": "/tags/-", "value": "new"},
            {"set": "tags.0", "value": "first"},
            {"remove": "secret"},
            {"remove": "/not/there"},
            {"move": "old.deep.value", "to": "/moved"},
            {"rename": "/meta/user", "to": "principal"},
        ]}}),
        json!({"n": "7", "user": r#""alice""#, "labels": r#"request.headers | emptyStringMap()"#}),
    );
    let body = r#"{"name":"b&b","secret":"s","tags":["a"],"old":{"deep":{"value":true}}}"#;
    let mut stream = w
        .mutation_stream(&bag(&[("k", "v")]), Direction::Request)
        .unwrap();
    assert_eq!(stream.body_limit(), Some(4096));
    for chunk in body.as_bytes().chunks(7) {
        assert_eq!(stream.push(chunk).unwrap(), Chunk::Held);
    }
    let m = stream.finish().unwrap();
    let out: serde_json::Value = serde_json::from_slice(m.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        out,
        json!({
            "name": "b&b",
            "tags": ["first", "new"],
            "old": {"deep": {}},
            "moved": true,
            "greeting": "hello alice <b&b>",
            "meta": {
                "count": 7,
                "principal": "alice",
                "labels": {"k": "v"},
                "source": {"kind": "rest", "v": [1, 2]},
            },
        })
    );
    let len = m.body.as_ref().unwrap().len().to_string();
    assert_eq!(m.header_changes, vec![Set(s("content-length"), len)]);
}

#[test]
fn json_edit_failures_are_bad_requests() {
    let w = worker(
        json!({"request": {"json": [{"set": "name.first", "value": "x"}]}}),
        json!({}),
    );
    let err = rewrite(&w, Direction::Request, r#"{"name": "plain"}"#).unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(
        err.to_string()
            .contains("`name` is a string, not an object"),
        "{err}"
    );
    let err = rewrite(&w, Direction::Request, "").unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    let err = rewrite(&w, Direction::Request, r#"{"a": 1} trailing"#).unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    // Deep nesting is refused by the parser's recursion limit, not by a stack overflow.
    let deep = "[".repeat(100_000);
    let w = worker(
        json!({"max_body_bytes": 200000, "request": {"json": [{"remove": "a"}]}}),
        json!({}),
    );
    let err = rewrite(&w, Direction::Request, &deep).unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
}

#[test]
fn json_output_templates_escape_for_json() {
    let w = worker(
        json!({"response": {
            "body": {"escape": "json", "template":
                "{\"message\": \"{{body.msg}} for {{vars.user}}\", \"count\": {{body.n | 0}}}"},
            "headers": [{"set": "content-type", "value": "application/json"}],
        }}),
        json!({"user": r#""quote\" and \\ back""#}),
    );
    let (body, headers) = rewrite(
        &w,
        Direction::Response,
        r#"{"msg": "line\nbreak \"q\"", "n": 5}"#,
    )
    .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        parsed,
        json!({"message": "line\nbreak \"q\" for quote\" and \\ back", "count": 5})
    );
    assert_eq!(
        headers,
        vec![
            Set(s("content-type"), s("application/json")),
            Set(s("content-length"), body.len().to_string()),
        ]
    );
    // The request direction has no operations.
    assert_eq!(rewrite(&w, Direction::Request, "not json").unwrap().0, "");
}

#[test]
fn xml_templates_escape_markup_and_refuse_control_characters() {
    let w = worker(
        json!({"request": {"body": {"template":
            "<r a=\"{{body.attr}}\">{{#each body.items}}<i n=\"{{item.n}}\">{{item.v}}</i>{{/each}}\
             {{#if body.note}}<note>{{body.note}}</note>{{/if}}</r>"}}}),
        json!({}),
    );
    let (body, _) = rewrite(
        &w,
        Direction::Request,
        r#"{"attr": "a\"b'c", "items": [{"n": 1, "v": "x<y"}, {"n": 2, "v": "&amp;"}]}"#,
    )
    .unwrap();
    assert_eq!(
        body,
        "<r a=\"a&quot;b&apos;c\"><i n=\"1\">x&lt;y</i><i n=\"2\">&amp;amp;</i></r>"
    );
    let err = rewrite(&w, Direction::Request, r#"{"attr": "\u0007"}"#).unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(err.to_string().contains("U+0007"), "{err}");
    let err = rewrite(&w, Direction::Request, r#"{"attr": 1, "items": {"n": 1}}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("`body.items` is an object, not a list"),
        "{err}"
    );
}

#[test]
fn output_is_bounded_too() {
    let w = worker(
        json!({"max_body_bytes": 100, "max_output_bytes": 150, "request": {"body": {
            "template": "{{#each body.l}}{{#each body.l}}0123456789{{/each}}{{/each}}"}}}),
        json!({}),
    );
    let err = rewrite(&w, Direction::Request, r#"{"l": [1,2,3,4,5,6]}"#).unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(err.to_string().contains("larger than 150 bytes"), "{err}");
}

#[test]
fn handlers_chain_in_rule_order_under_the_smallest_limit() {
    let mut cfg = common::config(
        json!({"max_body_bytes": 100, "request": {"json": [{"set": "step", "value": 1}]}}),
        json!({}),
    );
    let mut second = cfg.handlers[0].clone();
    second.name = "rw2".into();
    second.params = Some(mixer_core::snapshot::json_to_struct(&json!({
        "max_body_bytes": 50,
        "request": {
            "body": {"template": "<step n=\"{{body.step}}\">{{body.x}}</step>"},
            "headers": [{"set": "Content-Length", "value": "999"}],
        },
    })));
    cfg.handlers.push(second);
    let mut action = cfg.rules[0].actions[0].clone();
    action.handler = "rw2".into();
    cfg.rules[0].actions.push(action);
    let w = common::build(&cfg).unwrap();

    let mut stream = w.mutation_stream(&bag(&[]), Direction::Request).unwrap();
    assert_eq!(stream.body_limit(), Some(50));
    stream.push(br#"{"x": "a"}"#).unwrap();
    let m = stream.finish().unwrap();
    assert_eq!(m.body.as_deref(), Some(&b"<step n=\"1\">a</step>"[..]));
    // The handler set content-length itself: no second one is added.
    assert_eq!(m.header_changes, vec![Set(s("content-length"), s("999"))]);

    let mut stream = w.mutation_stream(&bag(&[]), Direction::Request).unwrap();
    stream.push(&[b' '; 50]).unwrap();
    let err = stream.push(b" ").unwrap_err();
    assert_eq!(err.http_status(), 413);
    assert!(err.to_string().contains("50 bytes"), "{err}");
    assert!(err.to_string().contains("`rw2.istio-system`"), "{err}");
}
