//! XML to JSON extraction (namespaces, attributes, lists, types, references) and config errors
//! that name their params field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{errors, rewrite, worker};
use mixer_core::mutation::Direction;
use serde_json::json;

const DOC: &str = r#"<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY boom "never expanded">]>
<env:Envelope xmlns:env="urn:env" xmlns:o="urn:other">
  <env:Body>
    <Order id="A-1" o:rev="3">
      <Total currency="EUR">12.50</Total>
      <Paid>true</Paid>
      <Line><Sku>s1</Sku><Qty>2</Qty></Line>
      <Line><Sku>s2</Sku><Qty>1</Qty></Line>
      <Note><![CDATA[<b>bold</b>]]> &amp; &#x263A; <i>more</i></Note>
      <o:Secret>hidden</o:Secret>
    </Order>
  </env:Body>
</env:Envelope>"#;

fn extract(fields: serde_json::Value, json_edits: serde_json::Value) -> serde_json::Value {
    let w = worker(
        json!({
            "namespaces": {"e": "urn:env", "o": "urn:other", "x": "urn:nowhere"},
            "response": {"xml_to_json": {"fields": fields}, "json": json_edits},
        }),
        json!({}),
    );
    let (body, _) = rewrite(&w, Direction::Response, DOC).unwrap();
    serde_json::from_str(&body).unwrap()
}

#[test]
fn fields_by_path_namespace_attribute_and_type() {
    let out = extract(
        json!([
            {"path": "/e:Envelope/e:Body/Order/@id", "to": "id"},
            {"path": "Envelope/Body/Order/@o:rev", "to": "rev", "type": "int"},
            {"path": "Envelope/Body/Order/Total", "to": "/total/amount", "type": "float"},
            {"path": "Envelope/Body/Order/Total/@currency", "to": "total.currency"},
            {"path": "Envelope/Body/Order/Paid", "to": "paid", "type": "bool"},
            {"path": "Envelope/Body/Order/Line/Sku", "to": "skus", "all": true},
            {"path": "Envelope/Body/Order/Line/Qty", "to": "qty", "type": "int", "all": true},
            {"path": "Envelope/Body/Order/Line/Sku", "to": "first_sku"},
            {"path": "Envelope/*/Order/Note", "to": "note"},
            {"path": "Envelope/Body/Order/o:Secret", "to": "secret"},
            {"path": "Envelope/Body/Order/x:Secret", "to": "wrong_ns"},
            {"path": "Envelope/Body/Order/Missing", "to": "missing"},
            {"path": "Envelope/Body/Order/Missing", "to": "none", "all": true},
        ]),
        json!([{"rename": "first_sku", "to": "sku"}, {"set": "source", "value": "soap"}]),
    );
    assert_eq!(
        out,
        json!({
            "id": "A-1",
            "rev": 3,
            "total": {"amount": 12.5, "currency": "EUR"},
            "paid": true,
            "skus": ["s1", "s2"],
            "qty": [2, 1],
            "sku": "s1",
            "note": "<b>bold</b> & \u{263A} more",
            "secret": "hidden",
            "none": [],
            "source": "soap",
        })
    );
}

#[test]
fn required_fields_and_types_are_checked() {
    let w = worker(
        json!({"response": {"xml_to_json": {"fields": [
            {"path": "Envelope/Body/Order/Paid", "to": "paid", "type": "int"},
        ]}}}),
        json!({}),
    );
    let err = rewrite(&w, Direction::Response, DOC).unwrap_err();
    assert_eq!(err.http_status(), 502);
    assert!(
        err.to_string().contains("`true` is not an integer"),
        "{err}"
    );
    let w = worker(
        json!({"response": {"xml_to_json": {"fields": [
            {"path": "Envelope/Body/Order/Gone", "to": "g", "required": true, "all": true},
        ]}}}),
        json!({}),
    );
    let err = rewrite(&w, Direction::Response, DOC).unwrap_err();
    assert!(
        err.to_string()
            .contains("there is no `Envelope/Body/Order/Gone`"),
        "{err}"
    );
    // XML on the request side is a client error.
    let w = worker(
        json!({"request": {"xml_to_json": {"fields": [{"path": "a", "to": "a"}]}}}),
        json!({}),
    );
    let err = rewrite(&w, Direction::Request, "<a>").unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert_eq!(
        rewrite(&w, Direction::Request, "<a> x </a>").unwrap().0,
        r#"{"a":"x"}"#
    );
}

fn one_error(params: serde_json::Value) -> String {
    let e = errors(params, json!({"user": "\"u\""}));
    assert_eq!(e.len(), 1, "{e:?}");
    e.into_iter().next().unwrap()
}

#[test]
fn config_errors_name_the_params_field() {
    let cases = [
        (
            json!({"max_body_bytes": 0}),
            "params.max_body_bytes",
            "positive integer",
        ),
        (json!({"bogus": 1}), "params.bogus", "unknown field"),
        (
            json!({"request": {"headers": [{"set": "bad name", "value": "x"}]}}),
            "params.request.headers[0].set",
            "not a header name",
        ),
        (
            json!({"request": {"headers": [{"remove": ":path"}]}}),
            "params.request.headers[0].remove",
            "not a header name",
        ),
        (
            json!({"request": {"headers": [{"set": "x", "value": "a", "var": "user"}]}}),
            "params.request.headers[0]",
            "only one of",
        ),
        (
            json!({"request": {"headers": [{"set": "x"}]}}),
            "params.request.headers[0]",
            "needs one of",
        ),
        (
            json!({"request": {"headers": [{"set": "x", "remove": "y", "value": "1"}]}}),
            "params.request.headers[0]",
            "exactly one of",
        ),
        (
            json!({"request": {"json": [{"set": "a..b", "value": 1}]}}),
            "params.request.json[0].set",
            "empty segment",
        ),
        (
            json!({"request": {"json": [{"move": "a"}]}}),
            "params.request.json[0].to",
            "is required",
        ),
        (
            json!({"request": {"json": [{"remove": "a", "value": 1}]}}),
            "params.request.json[0]",
            "takes no value",
        ),
        (
            json!({"request": {"body": {"template": "{{body.a"}}}),
            "params.request.body.template",
            "not closed",
        ),
        (
            json!({"request": {"body": {"template": "x", "escape": "html"}}}),
            "params.request.body.escape",
            "not one of",
        ),
        (
            json!({"response": {"body": {"template": "{{vars.nope}}"}}}),
            "params.response",
            "no `variables.nope`",
        ),
        (
            json!({"captures": [{"var": "user", "regex": "("}]}),
            "params.captures[0].regex",
            "regex parse error",
        ),
        (
            json!({"captures": [{"var": "user", "regex": "(x)"}]}),
            "params.captures[0].regex",
            "no named group",
        ),
        (
            json!({"captures": [{"var": "nope", "regex": "(?P<a>x)"}]}),
            "params.captures[0].var",
            "no `variables.nope`",
        ),
        (
            json!({"response": {"xml_to_json": {"fields": [{"path": "p:a", "to": "a"}]}}}),
            "params.response.xml_to_json.fields[0].path",
            "prefix `p`",
        ),
        (
            json!({"response": {"xml_to_json": {"fields": [{"path": "a", "to": "a"}, {"path": "b", "to": "a.b"}]}}}),
            "params.response.xml_to_json.fields[1].to",
            "`a` is a number",
        ),
        (
            json!({"response": {"xml_to_json": {"fields": [{"path": "a", "to": "a.b"}, {"path": "b", "to": "a"}]}}}),
            "params.response.xml_to_json.fields[0].to",
            "overwritten",
        ),
        (
            json!({"response": {"xml_to_json": {"fields": [{"path": "a", "to": "a", "type": "date"}]}}}),
            "params.response.xml_to_json.fields[0].type",
            "not one of",
        ),
    ];
    for (params, field, message) in cases {
        let e = one_error(params.clone());
        assert!(e.contains(&format!("field `{field}`")), "{params}: {e}");
        assert!(e.contains(message), "{params}: {e}");
        assert!(e.starts_with("handler/istio-system/rw"), "{e}");
    }
}

#[test]
fn captured_variables_count_as_defined() {
    let w = worker(
        json!({
            "captures": [{"var": "path", "regex": "^/things/(?P<id>[0-9]+)$"}],
            "request": {"json": [{"set": "id", "var": "id"}, {"set": "p", "var": "path"}]},
        }),
        json!({"path": "request.path"}),
    );
    let (body, _) = rewrite(&w, Direction::Request, "{}").unwrap();
    assert_eq!(body, r#"{"id":"12","p":"/things/12"}"#);
}
