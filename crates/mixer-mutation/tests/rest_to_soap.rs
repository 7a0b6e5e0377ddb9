//! The REST -> SOAP -> REST example (examples/mutation/rest_to_soap.yaml) through the pipeline:
//! the JSON request pushed in chunks becomes the exact SOAP envelope, the SOAP reply becomes JSON,
//! an oversized body is refused with 413 as it arrives, and bad JSON / XML give clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::adapter::HeaderChange;
use mixer_core::mutation::{Chunk, Direction};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::{AdapterRegistry, CompileOptions, Pipeline, Worker};

const CONFIG: &str = include_str!("../../../examples/mutation/rest_to_soap.yaml");

const ENVELOPE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:lib="urn:example:library">
  <soap:Body>
    <lib:AddBook>
      <lib:ShelfId>7</lib:ShelfId>
      <lib:Title>Dune &amp; Sons &lt;2nd ed.&gt;</lib:Title>
      <lib:Author>Frank Herbert — “F.H.”</lib:Author>
      <lib:Tags><lib:Tag>sf</lib:Tag><lib:Tag>classic</lib:Tag></lib:Tags>
      <lib:RequestedBy>alice</lib:RequestedBy>
    </lib:AddBook>
  </soap:Body>
</soap:Envelope>
"#;

const SOAP_REPLY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
  <s:Body>
    <AddBookResponse xmlns="urn:example:library">
      <BookId> 1042 </BookId>
      <Status>CREATED</Status>
    </AddBookResponse>
  </s:Body>
</s:Envelope>"#;

fn worker() -> Worker {
    let vt = VirtualPlatform::new();
    let platform = vt.platform();
    let loaded = mixer_config::load_str("rest_to_soap.yaml", CONFIG).expect("loads");
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(mixer_mutation::Rewrite));
    let snapshot = mixer_config::compile_loaded(
        &loaded,
        &registry,
        &platform,
        None,
        &CompileOptions::default(),
    )
    .expect("compiles");
    Pipeline::new(snapshot, platform).worker(Arc::new(vt))
}

fn bag(method: &'static str, path: &str, user: Option<&str>) -> Attributes<'static> {
    let mut headers: StringMap = [("content-type", "application/json"), ("accept", "*/*")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(u) = user {
        headers.insert("x-user".into(), u.into());
    }
    Attributes::new()
        .with(wk::REQUEST_METHOD, Value::str(method))
        .with(wk::REQUEST_PATH, Value::String(path.to_string().into()))
        .with(wk::REQUEST_HEADERS, Value::string_map(headers))
}

fn set(name: &str, value: &str) -> HeaderChange {
    HeaderChange::Set(name.into(), value.into())
}

/// Pushes `body` in `n` chunks (split on byte boundaries, so inside UTF-8 sequences too).
fn push_chunks(stream: &mut mixer_core::mutation::MutationStream, body: &[u8], n: usize) {
    for chunk in body.chunks(body.len().div_ceil(n)) {
        assert_eq!(stream.push(chunk).unwrap(), Chunk::Held);
    }
}

#[test]
fn rest_request_becomes_the_soap_envelope_and_the_reply_becomes_json() {
    let w = worker();
    let request = bag("POST", "/shelves/7/books", Some("alice"));
    let mut stream = w.mutation_stream(&request, Direction::Request).unwrap();
    assert!(stream.buffers_body());
    assert_eq!(stream.body_limit(), Some(65536));
    assert!(stream.header_changes().is_empty());
    let json = r#"{"title": "Dune & Sons <2nd ed.>", "author": "Frank Herbert — “F.H.”",
                   "tags": ["sf", "classic"]}"#;
    push_chunks(&mut stream, json.as_bytes(), 5);
    let soap = stream.finish().unwrap();
    assert_eq!(
        std::str::from_utf8(soap.body.as_deref().unwrap()).unwrap(),
        ENVELOPE
    );
    assert_eq!(
        soap.header_changes,
        vec![
            set(":path", "/LibraryService"),
            set("content-type", "text/xml; charset=utf-8"),
            set("soapaction", "\"urn:example:library#AddBook\""),
            HeaderChange::Remove("accept".into()),
            HeaderChange::Remove("accept-encoding".into()),
            set("content-length", &ENVELOPE.len().to_string()),
        ]
    );

    // The reply: the same request attributes plus the response's.
    let reply_bag = request.with(wk::RESPONSE_CODE, Value::Int64(200));
    let mut stream = w.mutation_stream(&reply_bag, Direction::Response).unwrap();
    push_chunks(&mut stream, SOAP_REPLY.as_bytes(), 3);
    let rest = stream.finish().unwrap();
    let body = r#"{"id":1042,"status":"CREATED"}"#;
    assert_eq!(rest.body.as_deref(), Some(body.as_bytes()));
    assert_eq!(
        rest.header_changes,
        vec![
            set("content-type", "application/json"),
            set("content-length", &body.len().to_string()),
        ]
    );
}

#[test]
fn the_whole_body_api_gives_the_same_envelope() {
    let w = worker();
    let json = r#"{"title":"Dune & Sons <2nd ed.>","author":"Frank Herbert — “F.H.”","tags":["sf","classic"]}"#;
    let m = w
        .mutate(
            &bag("POST", "/shelves/7/books", Some("alice")),
            json.as_bytes(),
        )
        .unwrap();
    assert_eq!(m.body.as_deref(), Some(ENVELOPE.as_bytes()));
    // Without `x-user` the instance's default applies.
    let m = w
        .mutate(
            &bag("POST", "/shelves/7/books", None),
            br#"{"title":"t","author":"a"}"#,
        )
        .unwrap();
    let xml = String::from_utf8(m.body.unwrap().to_vec()).unwrap();
    assert!(
        xml.contains("<lib:RequestedBy>anonymous</lib:RequestedBy>"),
        "{xml}"
    );
    assert!(xml.contains("<lib:Tags></lib:Tags>"), "{xml}");
}

#[test]
fn other_requests_pass_through_untouched() {
    let w = worker();
    let mut stream = w
        .mutation_stream(&bag("GET", "/shelves/7/books", None), Direction::Request)
        .unwrap();
    assert!(!stream.buffers_body());
    assert_eq!(stream.push(b"anything").unwrap(), Chunk::Forward);
    assert_eq!(stream.finish().unwrap(), Default::default());
}

#[test]
fn an_oversized_body_is_refused_with_413_as_it_arrives() {
    let w = worker();
    let mut stream = w
        .mutation_stream(&bag("POST", "/shelves/7/books", None), Direction::Request)
        .unwrap();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..4 {
        assert_eq!(stream.push(&chunk).unwrap(), Chunk::Held); // 64 KiB: at the limit
    }
    let err = stream.push(b"x").unwrap_err();
    assert_eq!(err.http_status(), 413);
    let msg = err.to_string();
    assert!(msg.contains("65536 bytes"), "{msg}");
    assert!(msg.contains("library-soap.istio-system"), "{msg}");
    // The stream stays failed.
    assert_eq!(stream.push(b"").unwrap_err(), err);
    assert_eq!(stream.finish().unwrap_err(), err);
    // The whole-body API reports the same limit as a status.
    let big = vec![b'a'; 70_000];
    let status = w
        .mutate(&bag("POST", "/shelves/7/books", None), &big)
        .unwrap_err();
    assert_eq!(status.code, mixer_core::Code::RESOURCE_EXHAUSTED);
    assert!(status.message.contains("65536"), "{}", status.message);
}

#[test]
fn bad_json_and_bad_xml_give_clear_errors() {
    let w = worker();
    let request = bag("POST", "/shelves/7/books", None);
    let err = w
        .mutation_stream(&request, Direction::Request)
        .unwrap()
        .finish_with(b"{\"title\": ")
        .unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(
        err.to_string().contains("request body is not valid JSON"),
        "{err}"
    );

    let err = w
        .mutation_stream(&request, Direction::Request)
        .unwrap()
        .finish_with(br#"{"author": "x"}"#)
        .unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(err.to_string().contains("`body.title` is missing"), "{err}");

    let response = |body: &str| {
        w.mutation_stream(&request, Direction::Response)
            .unwrap()
            .finish_with(body.as_bytes())
            .unwrap_err()
    };
    for (body, want) in [
        ("<a><b></a>", "at byte"),
        ("<s:Envelope xmlns:s=\"x\"><s:Body>", "ends inside <Body>"),
        ("not xml at all", "text outside the root element"),
        ("   ", "no root element"),
        ("<a/> trailing", "text outside the root element"),
        ("<a>&ent;</a>", "unknown entity `&ent;`"),
        ("<a/><b/>", "second root element"),
        ("<p:a/>", "prefix `p` is not declared"),
        (
            &SOAP_REPLY.replace("1042", "many"),
            "`many` is not an integer",
        ),
        (&SOAP_REPLY.replace("Status", "State"), "there is no"),
    ] {
        let err = response(body);
        assert_eq!(err.http_status(), 502, "{body}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("response body is not the expected XML"),
            "{msg}"
        );
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let err = response("\u{0}\u{ff}");
    assert_eq!(err.http_status(), 502);
    let err = w
        .mutation_stream(&request, Direction::Response)
        .unwrap()
        .finish_with(&[0xff, 0xfe, b'<'])
        .unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}

#[test]
fn damaged_bodies_fail_cleanly_never_panic() {
    let w = worker();
    let request = bag("POST", "/shelves/7/books", Some("alice"));
    let json = br#"{"title": "T", "author": "A", "tags": ["x", "y"]}"#;
    // xorshift64*: deterministic damage (truncations and byte flips) of valid bodies.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let (mut ok, mut failed) = (0, 0);
    for (direction, valid) in [
        (Direction::Request, &json[..]),
        (Direction::Response, SOAP_REPLY.as_bytes()),
    ] {
        for _ in 0..500 {
            let mut body = valid.to_vec();
            body.truncate(next() as usize % (body.len() + 1));
            for _ in 0..(next() % 4) {
                if !body.is_empty() {
                    let i = next() as usize % body.len();
                    body[i] = next() as u8;
                }
            }
            let stream = w.mutation_stream(&request, direction).unwrap();
            match stream.finish_with(&body) {
                Ok(m) => {
                    assert!(m.body.is_some());
                    ok += 1;
                }
                Err(e) => {
                    assert!(matches!(e.http_status(), 400 | 502), "{e}");
                    failed += 1;
                }
            }
        }
    }
    assert!(ok > 0 && failed > 0, "{ok} ok, {failed} failed");
}
