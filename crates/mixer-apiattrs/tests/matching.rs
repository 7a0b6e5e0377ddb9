//! Matching: literal > variable > wildcard precedence with backtracking, methods, `*` and `**`,
//! trailing slashes, percent-decoded path and query params, the outputs when nothing matches,
//! and 1,000 generated templates each matching the right operation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use mixer_apiattrs::ApiAttributes;
use mixer_attr::{StringMap, Value};
use serde_json::json;

fn handler(ops: &[(&str, &str, &str)]) -> ApiAttributes {
    let ops: Vec<_> = ops
        .iter()
        .map(|(name, method, template)| json!({"name": name, "method": method, "template": template}))
        .collect();
    ApiAttributes::from_params(&json!({
        "service": "bookstore.example.com",
        "version": "v1",
        "operations": ops,
    }))
    .unwrap()
}

fn position(output: &str) -> usize {
    mixer_core::template::template("apiattributes")
        .unwrap()
        .outputs
        .iter()
        .position(|f| f.path == output)
        .unwrap()
}

/// Every output of one request, by name (maps as sorted copies).
fn outputs(h: &ApiAttributes, method: &str, target: &str) -> BTreeMap<&'static str, String> {
    let out = h.outputs(method, target);
    let mut all = BTreeMap::new();
    for name in [
        "api_service",
        "api_version",
        "api_operation",
        "api_protocol",
        "path_params",
        "query_params",
    ] {
        if let Some(v) = out.get(position(name)) {
            let text = match v {
                Value::StringMap(m) => format!("{:?}", m.to_map()),
                v => v.as_str().unwrap().to_string(),
            };
            all.insert(name, text);
        }
    }
    all
}

fn path_params(h: &ApiAttributes, method: &str, target: &str) -> StringMap {
    match h.outputs(method, target).get(position("path_params")) {
        Some(Value::StringMap(m)) => m.to_map(),
        other => panic!("no path params for {method} {target}: {other:?}"),
    }
}

fn query_params(h: &ApiAttributes, target: &str) -> StringMap {
    match h.outputs("GET", target).get(position("query_params")) {
        Some(Value::StringMap(m)) => m.to_map(),
        other => panic!("no query params for {target}: {other:?}"),
    }
}

fn map(pairs: &[(&str, &str)]) -> StringMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn bookstore() -> ApiAttributes {
    handler(&[
        ("listShelves", "GET", "/shelves"),
        ("createShelf", "POST", "/shelves"),
        ("getShelf", "GET", "/shelves/{shelf}"),
        ("deleteShelf", "DELETE", "/shelves/{shelf}"),
        ("getFeatured", "GET", "/shelves/featured"),
        ("listBooks", "GET", "/shelves/{shelf}/books"),
        ("getBook", "GET", "/shelves/{shelf}/books/{book}"),
        ("getFile", "*", "/files/{path=**}"),
        ("anyBooks", "GET", "/*/books/special"),
        ("root", "GET", "/"),
        ("catchAll", "*", "/**"),
    ])
}

#[test]
fn literal_beats_variable_beats_wildcard() {
    let h = bookstore();
    assert_eq!(h.operation("GET", "/shelves/featured"), Some("getFeatured"));
    assert_eq!(h.operation("GET", "/shelves/12"), Some("getShelf"));
    assert_eq!(h.operation("GET", "/shelves/12/books/3"), Some("getBook"));
    assert_eq!(h.operation("GET", "/shelves"), Some("listShelves"));
    assert_eq!(h.operation("GET", "/"), Some("root"));
    assert_eq!(h.operation("GET", ""), None, "no leading slash");
    assert_eq!(h.operation("GET", "shelves"), None);
    // Nothing more specific: the `/**` catch-all.
    assert_eq!(h.operation("GET", "/other/thing"), Some("catchAll"));
    assert_eq!(h.operation("GET", "/shelves/1/2/3/4"), Some("catchAll"));
}

#[test]
fn backtracking_out_of_a_literal_branch() {
    let h = bookstore();
    // `shelves` is a literal child, but `/shelves/books/special` only fits `/*/books/special`.
    assert_eq!(
        h.operation("GET", "/shelves/books/special"),
        Some("anyBooks")
    );
    // `/shelves/featured/books` goes literal `featured` (no `books` below it), then `{shelf}`.
    assert_eq!(
        h.operation("GET", "/shelves/featured/books"),
        Some("listBooks")
    );
    let p = path_params(&h, "GET", "/shelves/featured/books");
    assert_eq!(p, map(&[("shelf", "featured")]));
    // Precedence goes segment by segment from the left: a literal first segment wins when
    // anything below it matches, and the variable branch is tried only when nothing does.
    let h = handler(&[("litVar", "GET", "/a/{x}/c"), ("varLit", "GET", "/{y}/b/d")]);
    assert_eq!(h.operation("GET", "/a/b/c"), Some("litVar"));
    assert_eq!(h.operation("GET", "/a/b/d"), Some("varLit"));
    assert_eq!(h.operation("GET", "/z/b/c"), None);
    let h = handler(&[
        ("litVar", "GET", "/a/{x}/c"),
        ("varLit", "GET", "/{y}/b/d"),
        ("wild", "GET", "/a/**"),
    ]);
    assert_eq!(h.operation("GET", "/a/b/c"), Some("litVar"));
    assert_eq!(
        h.operation("GET", "/a/b/d"),
        Some("wild"),
        "`/a/**` is below literal `a`"
    );
    assert_eq!(h.operation("GET", "/z/b/d"), Some("varLit"));
}

#[test]
fn methods_are_checked_at_the_leaf() {
    let h = bookstore();
    assert_eq!(h.operation("POST", "/shelves"), Some("createShelf"));
    assert_eq!(h.operation("DELETE", "/shelves/7"), Some("deleteShelf"));
    assert_eq!(h.operation("delete", "/shelves/7"), Some("deleteShelf"));
    // No DELETE at the literal leaf `featured`: the search goes on to `{shelf}`.
    assert_eq!(
        h.operation("DELETE", "/shelves/featured"),
        Some("deleteShelf")
    );
    // No PUT anywhere on the path but the `*`-method catch-all.
    assert_eq!(h.operation("PUT", "/shelves/7"), Some("catchAll"));
    // An exact method wins over `*` at the same leaf.
    let h = handler(&[("any", "*", "/x"), ("get", "GET", "/x")]);
    assert_eq!(h.operation("GET", "/x"), Some("get"));
    assert_eq!(h.operation("PATCH", "/x"), Some("any"));
    assert_eq!(h.operation("", "/x"), Some("any"));
    let h = handler(&[("get", "GET", "/x")]);
    assert_eq!(h.operation("POST", "/x"), None);
}

#[test]
fn wildcards() {
    let h = bookstore();
    assert_eq!(
        path_params(&h, "GET", "/files/a/b/c.txt"),
        map(&[("path", "a/b/c.txt")])
    );
    assert_eq!(path_params(&h, "HEAD", "/files"), map(&[("path", "")]));
    assert_eq!(path_params(&h, "GET", "/files/"), map(&[("path", "")]));
    let h = handler(&[
        ("one", "GET", "/x/*"),
        ("named", "GET", "/y/{id=*}/z"),
        ("rest", "GET", "/w/**"),
    ]);
    assert_eq!(h.operation("GET", "/x/1"), Some("one"));
    assert_eq!(
        path_params(&h, "GET", "/x/1"),
        StringMap::new(),
        "`*` is unnamed"
    );
    assert_eq!(h.operation("GET", "/x"), None, "`*` needs one segment");
    assert_eq!(h.operation("GET", "/x/1/2"), None);
    assert_eq!(
        h.operation("GET", "/x//"),
        None,
        "an empty segment matches no `*`"
    );
    assert_eq!(path_params(&h, "GET", "/y/7/z"), map(&[("id", "7")]));
    assert_eq!(h.operation("GET", "/w"), Some("rest"));
    assert_eq!(h.operation("GET", "/w/a//b"), Some("rest"));
}

#[test]
fn trailing_slash_is_ignored_on_both_sides() {
    let h = handler(&[("list", "GET", "/shelves/"), ("get", "GET", "/shelves/{s}")]);
    assert_eq!(h.operation("GET", "/shelves"), Some("list"));
    assert_eq!(h.operation("GET", "/shelves/"), Some("list"));
    assert_eq!(h.operation("GET", "/shelves/?q=1"), Some("list"));
    assert_eq!(h.operation("GET", "/shelves/3/"), Some("get"));
    assert_eq!(path_params(&h, "GET", "/shelves/3/"), map(&[("s", "3")]));
    // Only one.
    assert_eq!(h.operation("GET", "/shelves//"), None);
}

#[test]
fn path_params_are_percent_decoded() {
    let h = bookstore();
    assert_eq!(
        path_params(&h, "GET", "/shelves/my%20shelf/books/a%2Fb+c"),
        map(&[("shelf", "my shelf"), ("book", "a/b+c")])
    );
    assert_eq!(
        path_params(&h, "GET", "/files/dir%20one/%E2%82%AC.txt?x=1"),
        map(&[("path", "dir one/€.txt")])
    );
    // Bad escapes are kept; invalid UTF-8 becomes U+FFFD.
    assert_eq!(
        path_params(&h, "GET", "/shelves/100%25%zz%FF"),
        map(&[("shelf", "100%%zz\u{FFFD}")])
    );
    // Literal segments are compared decoded, on both sides.
    let h = handler(&[("spaced", "GET", "/my%20docs/{d}")]);
    assert_eq!(h.operation("GET", "/my%20docs/1"), Some("spaced"));
    assert_eq!(h.operation("GET", "/my docs/1"), Some("spaced"));
    assert_eq!(h.operation("GET", "/my%20Docs/1"), None);
}

#[test]
fn query_params_are_decoded() {
    let h = bookstore();
    assert_eq!(
        query_params(&h, "/shelves?a=1&b=x%20y&c=1+2&d&a=ignored&e=%3D%26#frag"),
        map(&[
            ("a", "1"),
            ("b", "x y"),
            ("c", "1 2"),
            ("d", ""),
            ("e", "=&")
        ])
    );
    assert_eq!(query_params(&h, "/shelves"), StringMap::new());
    assert_eq!(query_params(&h, "/shelves?"), StringMap::new());
    assert_eq!(
        query_params(&h, "/shelves?q=a+b%2Bc&&x%20y=z"),
        map(&[("q", "a b+c"), ("x y", "z")])
    );
}

#[test]
fn outputs_with_and_without_a_match() {
    let h = bookstore();
    assert_eq!(
        outputs(&h, "GET", "/shelves/3?view=full"),
        [
            ("api_operation", "getShelf"),
            ("api_protocol", "http"),
            ("api_service", "bookstore.example.com"),
            ("api_version", "v1"),
            ("path_params", "{\"shelf\": \"3\"}"),
            ("query_params", "{\"view\": \"full\"}"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect::<BTreeMap<_, _>>()
    );
    let h = handler(&[("getShelf", "GET", "/shelves/{shelf}")]);
    // No match: service, version and protocol only.
    assert_eq!(
        outputs(&h, "GET", "/nope?x=1"),
        [
            ("api_protocol", "http"),
            ("api_service", "bookstore.example.com"),
            ("api_version", "v1"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect::<BTreeMap<_, _>>()
    );
    // Without service and version, with another protocol.
    let h = ApiAttributes::from_params(&json!({"protocol": "grpc"})).unwrap();
    let out = outputs(&h, "POST", "/pkg.Service/Method");
    assert_eq!(out.len(), 1);
    assert_eq!(out["api_protocol"], "grpc");
}

#[test]
fn istio_httpapispec_shape() {
    // As written in an Istio HTTPAPISpec, `Attributes` message form included.
    let h = ApiAttributes::from_params(&json!({
        "attributes": {"attributes": {
            "api.service": {"stringValue": "petstore.swagger.io"},
            "api.version": {"stringValue": "1.0.0"},
        }},
        "patterns": [
            {"attributes": {"attributes": {"api.operation": {"stringValue": "findPets"}}},
             "httpMethod": "GET", "uriTemplate": "/api/pets"},
            {"attributes": {"api.operation": "findPetById"},
             "http_method": "GET", "uri_template": "/api/pets/{id}"},
            {"attributes": {"api.operation": "anything"}, "uriTemplate": "/api/**"},
        ],
    }))
    .unwrap();
    assert_eq!(h.operation("GET", "/api/pets"), Some("findPets"));
    assert_eq!(h.operation("GET", "/api/pets/9"), Some("findPetById"));
    assert_eq!(h.operation("DELETE", "/api/pets/9"), Some("anything"));
    let out = outputs(&h, "GET", "/api/pets");
    assert_eq!(out["api_service"], "petstore.swagger.io");
    assert_eq!(out["api_version"], "1.0.0");
}

#[test]
fn a_thousand_generated_templates_each_match_the_right_one() {
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let mut ops = Vec::new();
    for i in 0..1000 {
        let method = methods[i % 4];
        let template = match i % 5 {
            0 => format!("/svc{}/items", i / 5),
            1 => format!("/svc{}/items/{{id}}", i / 5),
            2 => format!("/svc{}/items/{{id}}/parts/{{part}}", i / 5),
            3 => format!("/svc{}/{{kind}}/v{}", i / 5, i % 7),
            _ => format!("/svc{}/files/{{path=**}}", i / 5),
        };
        ops.push(json!({"name": format!("op{i}"), "method": method, "template": template}));
    }
    let h = ApiAttributes::from_params(&json!({"operations": ops})).unwrap();
    assert_eq!(h.matcher().len(), 1000);
    for i in 0..1000 {
        let method = methods[i % 4];
        let (path, params) = match i % 5 {
            0 => (format!("/svc{}/items", i / 5), map(&[])),
            1 => (
                format!("/svc{}/items/x{i}", i / 5),
                map(&[("id", &format!("x{i}"))]),
            ),
            2 => (
                format!("/svc{}/items/a%20{i}/parts/p", i / 5),
                map(&[("id", &format!("a {i}")), ("part", "p")]),
            ),
            3 => (
                format!("/svc{}/things/v{}", i / 5, i % 7),
                map(&[("kind", "things")]),
            ),
            _ => (
                format!("/svc{}/files/a/b/{i}", i / 5),
                map(&[("path", &format!("a/b/{i}"))]),
            ),
        };
        let want = format!("op{i}");
        assert_eq!(
            h.operation(method, &path),
            Some(want.as_str()),
            "{method} {path}"
        );
        assert_eq!(path_params(&h, method, &path), params, "{method} {path}");
        // Another method on the same path matches no operation of this shape and service.
        let other = if method == "GET" { "PATCH" } else { "OPTIONS" };
        assert_eq!(h.operation(other, &path), None, "{other} {path}");
    }
    assert_eq!(h.operation("GET", "/svc1000/items"), None);
}
