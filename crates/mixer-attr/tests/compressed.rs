//! The compressed attribute form: round trips, dictionary use, custom vocabularies and malformed
//! input.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use mixer_attr::compressed::{
    DecodeError, GLOBAL_WORD_COUNT, GLOBAL_WORDS, decode, decode_bytes, encode, encode_bytes,
    global_word_index,
};
use mixer_attr::{
    AttrId, Attributes, Bag, Duration, ISTIO_ATTRIBUTES, StringMap, StringMapRef, Timestamp, Value,
    ValueType, Vocabulary, well_known as wk,
};
use mixer_proto::prost::Message;
use mixer_proto::prost_types;
use mixer_proto::v2::{CompressedAttributes, StringMap as WireStringMap};
use proptest::prelude::*;

/// Istio's vocabulary plus the value types it has no attribute for.
fn test_vocab() -> (Vocabulary, [AttrId; 4]) {
    let mut v = Vocabulary::istio();
    let ids = [
        v.declare("test.double", ValueType::Double).unwrap(),
        v.declare("test.email", ValueType::EmailAddress).unwrap(),
        v.declare("test.uri", ValueType::Uri).unwrap(),
        v.declare("test.dns", ValueType::DnsName).unwrap(),
    ];
    (v, ids)
}

/// Same attributes and values, in any order.
fn assert_same_bag(got: &Attributes<'_>, want: &Attributes<'_>) {
    assert_eq!(got.len(), want.len(), "got {got:?}\nwant {want:?}");
    for (id, v) in want.iter() {
        assert_eq!(got.get(id), Some(v.reborrow()), "attribute {id:?}");
    }
}

fn all_types_bag(ids: [AttrId; 4]) -> Attributes<'static> {
    let headers: StringMap = [
        (":authority", "reviews.default.svc.cluster.local"),
        (":method", "GET"),
        ("user-agent", "curl/7.58.0"),
        ("x-custom", "some value"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let [double, email, uri, dns] = ids;
    Attributes::new()
        .with(wk::REQUEST_PATH, Value::str("/reviews/1"))
        .with(wk::RESPONSE_CODE, Value::Int64(-404))
        .with(double, Value::Double(0.25))
        .with(wk::CONNECTION_MTLS, Value::Bool(true))
        .with(
            wk::REQUEST_TIME,
            Value::Timestamp(Timestamp::new(1_577_836_800, 123_456_789)),
        )
        .with(wk::SOURCE_IP, Value::IpAddress("10.1.2.3".parse().unwrap()))
        .with(
            wk::DESTINATION_IP,
            Value::IpAddress("2001:db8::1".parse().unwrap()),
        )
        .with(
            email,
            Value::EmailAddress(Cow::Borrowed("user@example.com")),
        )
        .with(uri, Value::Uri(Cow::Borrowed("https://example.com/a?b=c")))
        .with(dns, Value::DnsName(Cow::Borrowed("example.com")))
        .with(
            wk::RESPONSE_DURATION,
            Value::Duration(Duration::from_nanos(-1_500_000_001)),
        )
        .with(wk::REQUEST_HEADERS, Value::string_map(headers))
}

#[test]
fn every_value_type_round_trips_through_bytes() {
    let (vocab, ids) = test_vocab();
    let bag = all_types_bag(ids);
    let mut types: Vec<ValueType> = bag.iter().map(|(_, v)| v.value_type()).collect();
    types.sort();
    types.dedup();
    assert_eq!(
        types,
        ValueType::ALL.to_vec(),
        "the bag must hold all 11 types"
    );

    let bytes = encode_bytes(&vocab, &bag);
    let back = decode_bytes(&vocab, &bytes).unwrap();
    assert_same_bag(&back, &bag);
    // Deterministic: the same bag always encodes to the same bytes (maps are ordered; the
    // per-message words follow the bag's iteration order).
    assert_eq!(encode_bytes(&vocab, &bag), bytes);
    assert_same_bag(
        &decode_bytes(&vocab, &encode_bytes(&vocab, &back)).unwrap(),
        &bag,
    );
    // The decoded bag is owned and can outlive the input buffer.
    drop(bytes);
    assert_eq!(back.get(wk::REQUEST_PATH), Some(Value::str("/reviews/1")));
}

#[test]
fn empty_bag_round_trips() {
    let vocab = Vocabulary::istio();
    let msg = encode(&vocab, &Attributes::new());
    assert_eq!(msg.global_word_count, GLOBAL_WORD_COUNT);
    assert!(decode(&vocab, &msg).unwrap().is_empty());
    assert!(decode_bytes(&vocab, &[]).unwrap().is_empty());
}

#[test]
fn well_known_words_are_global_and_other_words_stored_once() {
    let vocab = Vocabulary::istio();
    let headers: &[(&str, &str)] = &[
        ("user-agent", "my-agent/1.0"),
        ("content-type", "application/json"),
        ("x-tenant", "acme"),
    ];
    let bag = Attributes::new()
        .with(wk::REQUEST_METHOD, Value::str("GET"))
        .with(wk::REQUEST_USERAGENT, Value::str("my-agent/1.0"))
        .with(
            wk::REQUEST_HEADERS,
            Value::StringMap(StringMapRef::Borrowed(&headers)),
        )
        .with(wk::RESPONSE_CODE, Value::Int64(200));
    let msg = encode(&vocab, &bag);

    // Names of well-known attributes are their ids; well-known values are global words.
    let method = i32::try_from(wk::REQUEST_METHOD.0).unwrap();
    assert_eq!(msg.strings.get(&method), global_word_index("GET").as_ref());
    assert_eq!(GLOBAL_WORDS[wk::REQUEST_METHOD.index()], "request.method");
    assert!(
        msg.int64s
            .contains_key(&i32::try_from(wk::RESPONSE_CODE.0).unwrap())
    );
    let map = &msg.string_maps[&i32::try_from(wk::REQUEST_HEADERS.0).unwrap()];
    let ua = global_word_index("user-agent").unwrap();
    assert_eq!(
        map.entries.get(&ua),
        Some(&-1),
        "the unknown value is words[0]"
    );
    assert_eq!(
        map.entries.get(&global_word_index("content-type").unwrap()),
        global_word_index("application/json").as_ref()
    );

    // "my-agent/1.0" is used twice (header value and request.useragent) but stored once.
    assert_eq!(msg.words, vec!["my-agent/1.0", "x-tenant", "acme"]);
    let useragent = i32::try_from(wk::REQUEST_USERAGENT.0).unwrap();
    assert_eq!(msg.strings.get(&useragent), Some(&-1));

    assert_same_bag(&decode(&vocab, &msg).unwrap(), &bag);
}

#[test]
fn custom_vocabularies_beyond_istio() {
    // A vocabulary with none of Istio's attributes: ids no longer match global indices.
    let mut sender = Vocabulary::empty();
    let tenant = sender.declare("my.tenant", ValueType::String).unwrap();
    let app = sender.declare("app", ValueType::Int64).unwrap(); // "app" is a global word
    let path = sender.declare("request.path", ValueType::String).unwrap(); // at id 2, not 7
    let site = sender.declare("my.site", ValueType::Uri).unwrap();
    let bag = Attributes::new()
        .with(tenant, Value::str("acme"))
        .with(app, Value::Int64(7))
        .with(path, Value::str("/x"))
        .with(site, Value::Uri(Cow::Borrowed("https://acme.example/")));
    let msg = encode(&sender, &bag);
    assert!(msg.words.contains(&"my.tenant".to_string()));
    assert!(msg.int64s.contains_key(&global_word_index("app").unwrap()));
    assert!(
        msg.strings
            .contains_key(&global_word_index("request.path").unwrap())
    );
    assert_same_bag(&decode(&sender, &msg).unwrap(), &bag);

    // A receiver that declares the same names at other ids decodes by name.
    let mut receiver = Vocabulary::istio();
    let r_site = receiver.declare("my.site", ValueType::Uri).unwrap();
    let r_app = receiver.declare("app", ValueType::Int64).unwrap();
    let r_tenant = receiver.declare("my.tenant", ValueType::String).unwrap();
    let got = decode(&receiver, &msg).unwrap();
    assert_eq!(got.get(r_tenant), Some(Value::str("acme")));
    assert_eq!(got.get(r_app), Some(Value::Int64(7)));
    assert_eq!(got.get(wk::REQUEST_PATH), Some(Value::str("/x")));
    assert_eq!(
        got.get(r_site),
        Some(Value::Uri(Cow::Borrowed("https://acme.example/")))
    );

    // The receiver's vocabulary gives string-like types: a STRING sent for a DNS_NAME decodes as
    // a DNS_NAME.
    let mut dns_receiver = Vocabulary::empty();
    let d = dns_receiver
        .declare("my.tenant", ValueType::DnsName)
        .unwrap();
    dns_receiver.declare("app", ValueType::Int64).unwrap();
    dns_receiver
        .declare("request.path", ValueType::String)
        .unwrap();
    dns_receiver.declare("my.site", ValueType::String).unwrap();
    let got = decode(&dns_receiver, &msg).unwrap();
    assert_eq!(got.get(d), Some(Value::DnsName(Cow::Borrowed("acme"))));

    // A receiver that lacks an attribute names it.
    let err = decode(&Vocabulary::istio(), &msg).unwrap_err();
    assert!(
        matches!(&err, DecodeError::UnknownAttribute(n) if n == "my.tenant" || n == "app" || n == "my.site"),
        "{err}"
    );

    // A receiver that declares another type names the attribute and both types.
    let mut other = receiver.clone();
    let mut clash = Vocabulary::empty();
    clash.declare("my.tenant", ValueType::String).unwrap();
    clash.declare("app", ValueType::Double).unwrap();
    clash.declare("request.path", ValueType::String).unwrap();
    clash.declare("my.site", ValueType::Uri).unwrap();
    let err = decode(&clash, &msg).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TypeMismatch {
            name: "app".into(),
            declared: ValueType::Double,
            encoded_as: "an int64"
        }
    );
    assert!(
        err.to_string().contains("`app`") && err.to_string().contains("DOUBLE"),
        "{err}"
    );
    other.declare("extra", ValueType::Bool).unwrap();
    assert!(decode(&other, &msg).is_ok());
}

#[test]
fn attributes_missing_from_the_encoding_vocabulary_are_skipped() {
    let vocab = Vocabulary::istio();
    let bag = Attributes::new()
        .with(wk::REQUEST_PATH, Value::str("/"))
        .with(AttrId(100_000), Value::Int64(1));
    let got = decode(&vocab, &encode(&vocab, &bag)).unwrap();
    assert_eq!(got.len(), 1);
}

/// A valid encoding of a typical bag (all names global).
fn valid_bytes() -> (Vocabulary, Vec<u8>) {
    let (vocab, ids) = test_vocab();
    // Use only Istio attributes so every name is a global index.
    let mut bag = all_types_bag(ids);
    for id in ids {
        bag.remove(id);
    }
    (vocab.clone(), encode_bytes(&vocab, &bag))
}

#[test]
fn truncated_encodings_never_decode_to_a_bag() {
    let (vocab, bytes) = valid_bytes();
    let words = CompressedAttributes::decode(&bytes[..])
        .unwrap()
        .words
        .len();
    assert!(words > 0);
    let mut empty = 0;
    for len in 0..bytes.len() {
        match decode_bytes(&vocab, &bytes[..len]) {
            Err(_) => {}
            // Protobuf has no end marker: a prefix that ends on a field boundary before the first
            // attribute (within the leading `words`) is a valid message with no attributes. Any
            // prefix holding an attribute lacks the trailing `global_word_count`, so its global
            // indices are rejected.
            Ok(bag) => {
                assert!(bag.is_empty(), "prefix of {len} bytes decoded to {bag:?}");
                empty += 1;
            }
        }
    }
    assert!(
        empty <= words + 1,
        "{empty} of {} prefixes decoded",
        bytes.len()
    );
    assert!(decode_bytes(&vocab, &bytes).is_ok());
}

fn idx(id: AttrId) -> i32 {
    i32::try_from(id.0).unwrap()
}

fn base_msg() -> CompressedAttributes {
    CompressedAttributes {
        global_word_count: GLOBAL_WORD_COUNT,
        ..Default::default()
    }
}

#[test]
fn bad_word_indices_are_rejected() {
    let vocab = Vocabulary::istio();
    let path = idx(wk::REQUEST_PATH);
    let headers = idx(wk::REQUEST_HEADERS);
    let out_of_range = |r: Result<Attributes<'static>, DecodeError>, want: i32| match r {
        Err(DecodeError::WordIndexOutOfRange { index, .. }) => assert_eq!(index, want),
        other => panic!("expected index {want} out of range, got {other:?}"),
    };
    let count = i32::try_from(GLOBAL_WORD_COUNT).unwrap();
    for bad in [count, count + 1, i32::MAX, -1, -2, i32::MIN] {
        // As an attribute name.
        let mut m = base_msg();
        m.int64s.insert(bad, 1);
        out_of_range(decode(&vocab, &m), bad);
        // As a string value.
        let mut m = base_msg();
        m.strings.insert(path, bad);
        out_of_range(decode(&vocab, &m), bad);
        // As a map key and as a map value.
        let mut m = base_msg();
        m.string_maps.insert(
            headers,
            WireStringMap {
                entries: [(bad, 0)].into(),
            },
        );
        out_of_range(decode(&vocab, &m), bad);
        let mut m = base_msg();
        m.string_maps.insert(
            headers,
            WireStringMap {
                entries: [(0, bad)].into(),
            },
        );
        out_of_range(decode(&vocab, &m), bad);
    }
    // Per-message words: -1 is valid with one word, -2 is not.
    let mut m = base_msg();
    m.words = vec!["/p".into()];
    m.strings.insert(path, -1);
    assert_eq!(
        decode(&vocab, &m).unwrap().get(wk::REQUEST_PATH),
        Some(Value::str("/p"))
    );
    m.strings.insert(path, -2);
    out_of_range(decode(&vocab, &m), -2);
    // A global index the sender did not claim to know.
    let mut m = base_msg();
    m.global_word_count = 5;
    m.strings.insert(idx(wk::ORIGIN_UID), 5);
    out_of_range(decode(&vocab, &m), 5);
    m.strings.clear();
    m.strings.insert(path, 0);
    out_of_range(decode(&vocab, &m), path);
}

#[test]
fn names_and_kinds_are_checked() {
    let vocab = Vocabulary::istio();
    // A global word that is not an attribute.
    let mut m = base_msg();
    m.int64s.insert(global_word_index(":authority").unwrap(), 1);
    assert_eq!(
        decode(&vocab, &m),
        Err(DecodeError::UnknownAttribute(":authority".into()))
    );
    // A per-message word that is not an attribute.
    let mut m = base_msg();
    m.words = vec!["no.such.attr".into()];
    m.bools.insert(-1, true);
    let err = decode(&vocab, &m).unwrap_err();
    assert!(err.to_string().contains("`no.such.attr`"), "{err}");

    // Each map kind with an attribute of another type.
    let code = idx(wk::RESPONSE_CODE); // INT64
    let path = idx(wk::REQUEST_PATH); // STRING
    let cases: Vec<(CompressedAttributes, &str, ValueType)> = vec![
        (
            {
                let mut m = base_msg();
                m.strings.insert(code, 0);
                m
            },
            "response.code",
            ValueType::Int64,
        ),
        (
            {
                let mut m = base_msg();
                m.int64s.insert(path, 0);
                m
            },
            "request.path",
            ValueType::String,
        ),
        (
            {
                let mut m = base_msg();
                m.doubles.insert(code, 0.5);
                m
            },
            "response.code",
            ValueType::Int64,
        ),
        (
            {
                let mut m = base_msg();
                m.bools.insert(code, true);
                m
            },
            "response.code",
            ValueType::Int64,
        ),
        (
            {
                let mut m = base_msg();
                m.timestamps.insert(code, prost_types::Timestamp::default());
                m
            },
            "response.code",
            ValueType::Int64,
        ),
        (
            {
                let mut m = base_msg();
                m.durations.insert(code, prost_types::Duration::default());
                m
            },
            "response.code",
            ValueType::Int64,
        ),
        (
            {
                let mut m = base_msg();
                m.bytes.insert(path, vec![1, 2, 3, 4]);
                m
            },
            "request.path",
            ValueType::String,
        ),
        (
            {
                let mut m = base_msg();
                m.string_maps.insert(path, WireStringMap::default());
                m
            },
            "request.path",
            ValueType::String,
        ),
    ];
    for (m, name, declared) in cases {
        match decode(&vocab, &m) {
            Err(DecodeError::TypeMismatch {
                name: n,
                declared: d,
                ..
            }) => {
                assert_eq!((n.as_str(), d), (name, declared))
            }
            other => panic!("{m:?}: expected a type mismatch, got {other:?}"),
        }
    }
}

#[test]
fn bad_values_are_rejected() {
    let vocab = Vocabulary::istio();
    let ip = idx(wk::SOURCE_IP);
    for len in [0, 1, 3, 5, 15, 17, 32] {
        let mut m = base_msg();
        m.bytes.insert(ip, vec![7; len]);
        assert_eq!(
            decode(&vocab, &m),
            Err(DecodeError::BadIpLength {
                name: "source.ip".into(),
                len
            })
        );
    }
    let ts = idx(wk::REQUEST_TIME);
    for (seconds, nanos) in [
        (0, -1),
        (0, 1_000_000_000),
        (i64::MAX, 0),
        (i64::MIN, 0),
        (253_402_300_800, 0),
    ] {
        let mut m = base_msg();
        m.timestamps
            .insert(ts, prost_types::Timestamp { seconds, nanos });
        assert!(
            matches!(decode(&vocab, &m), Err(DecodeError::TimestampOutOfRange { ref name, .. }) if name == "request.time"),
            "{seconds} {nanos}"
        );
    }
    let d = idx(wk::RESPONSE_DURATION);
    for (seconds, nanos) in [
        (1, -1),
        (-1, 1),
        (0, 1_000_000_000),
        (0, -1_000_000_000),
        (i64::MAX, 0),
        (i64::MIN, 0),
        (9_223_372_037, 0),
    ] {
        let mut m = base_msg();
        m.durations
            .insert(d, prost_types::Duration { seconds, nanos });
        assert!(
            matches!(decode(&vocab, &m), Err(DecodeError::DurationOutOfRange { ref name, .. }) if name == "response.duration"),
            "{seconds} {nanos}"
        );
    }
    // The same attribute spelled twice (global index and per-message word).
    let mut m = base_msg();
    m.words = vec!["request.path".into()];
    m.strings.insert(idx(wk::REQUEST_PATH), 0);
    m.strings.insert(-1, 0);
    assert_eq!(
        decode(&vocab, &m),
        Err(DecodeError::DuplicateAttribute("request.path".into()))
    );
}

#[test]
fn garbage_protobuf_is_an_error() {
    let vocab = Vocabulary::istio();
    for bytes in [
        &[0xff][..],
        &[0x0a, 0x05, b'a'],
        &[0x12, 0x80],
        &[0x08],
        &[0x0b],
        &[0x80; 11],
    ] {
        assert!(
            matches!(decode_bytes(&vocab, bytes), Err(DecodeError::Protobuf(_))),
            "{bytes:?}"
        );
    }
}

fn arb_value(ty: ValueType) -> BoxedStrategy<Value<'static>> {
    let s = || "[a-z:/.-]{0,12}|GET|application/json|:authority";
    match ty {
        ValueType::String => s().prop_map(|s| Value::String(Cow::Owned(s))).boxed(),
        ValueType::EmailAddress => s().prop_map(|s| Value::EmailAddress(Cow::Owned(s))).boxed(),
        ValueType::Uri => s().prop_map(|s| Value::Uri(Cow::Owned(s))).boxed(),
        ValueType::DnsName => s().prop_map(|s| Value::DnsName(Cow::Owned(s))).boxed(),
        ValueType::Int64 => any::<i64>().prop_map(Value::Int64).boxed(),
        // NaN != NaN, so compare finite doubles only.
        ValueType::Double => any::<f64>()
            .prop_filter("finite", |f| !f.is_nan())
            .prop_map(Value::Double)
            .boxed(),
        ValueType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        ValueType::Timestamp => (-62_135_596_800i64..=253_402_300_799, 0u32..1_000_000_000)
            .prop_map(|(s, n)| Value::Timestamp(Timestamp::new(s, n)))
            .boxed(),
        ValueType::Duration => any::<i64>()
            .prop_map(|n| Value::Duration(Duration::from_nanos(n)))
            .boxed(),
        ValueType::IpAddress => prop_oneof![
            any::<[u8; 4]>().prop_map(|b| Value::IpAddress(IpAddr::from(b))),
            any::<[u8; 16]>().prop_map(|b| Value::IpAddress(IpAddr::from(b))),
        ]
        .boxed(),
        ValueType::StringMap => proptest::collection::btree_map(s(), s(), 0..5)
            .prop_map(Value::string_map)
            .boxed(),
    }
}

fn arb_bag() -> impl Strategy<Value = Attributes<'static>> {
    let (vocab, _) = test_vocab();
    let attrs: Vec<(AttrId, ValueType)> = vocab.iter().map(|(id, _, ty)| (id, ty)).collect();
    proptest::sample::subsequence(attrs, 0..20).prop_flat_map(|chosen| {
        let values: Vec<_> = chosen
            .iter()
            .map(|(id, ty)| (Just(*id), arb_value(*ty)))
            .collect();
        values.prop_map(|pairs| {
            let mut bag = Attributes::new();
            for (id, v) in pairs {
                bag.set(id, v);
            }
            bag
        })
    })
}

fn arb_index() -> impl Strategy<Value = i32> {
    prop_oneof![-4i32..(ISTIO_ATTRIBUTES.len() as i32 + 8), any::<i32>()]
}

fn small<S: Strategy>(values: S) -> impl Strategy<Value = BTreeMap<i32, S::Value>> {
    proptest::collection::btree_map(arb_index(), values, 0..4)
}

/// Small messages over a small index range, so that names and words often resolve.
fn arb_message() -> impl Strategy<Value = CompressedAttributes> {
    (
        proptest::collection::vec("[a-z.]{0,10}|request.path|source.labels", 0..4),
        small(arb_index()),
        small(any::<i64>()),
        small(any::<f64>()),
        small(any::<bool>()),
        small(
            (any::<i64>(), any::<i32>())
                .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        ),
        small(
            (any::<i64>(), any::<i32>())
                .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
        ),
        small(proptest::collection::vec(any::<u8>(), 0..18)),
        small(
            proptest::collection::btree_map(arb_index(), arb_index(), 0..3)
                .prop_map(|entries| WireStringMap { entries }),
        ),
        prop_oneof![Just(GLOBAL_WORD_COUNT), any::<u32>()],
    )
        .prop_map(
            |(
                words,
                strings,
                int64s,
                doubles,
                bools,
                timestamps,
                durations,
                bytes,
                string_maps,
                global_word_count,
            )| CompressedAttributes {
                words,
                strings,
                int64s,
                doubles,
                bools,
                timestamps,
                durations,
                bytes,
                string_maps,
                global_word_count,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bags_round_trip(bag in arb_bag()) {
        let (vocab, _) = test_vocab();
        let back = decode_bytes(&vocab, &encode_bytes(&vocab, &bag)).unwrap();
        prop_assert_eq!(back.len(), bag.len());
        for (id, v) in bag.iter() {
            prop_assert_eq!(back.get(id), Some(v.reborrow()));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let (vocab, _) = test_vocab();
        let _ = decode_bytes(&vocab, &bytes);
    }

    #[test]
    fn random_messages_never_panic_and_decoded_bags_re_encode(msg in arb_message()) {
        let (vocab, _) = test_vocab();
        let _ = decode_bytes(&vocab, &msg.encode_to_vec());
        if let Ok(bag) = decode(&vocab, &msg) {
            let again = decode(&vocab, &encode(&vocab, &bag)).unwrap();
            prop_assert_eq!(again.len(), bag.len());
            for (id, v) in bag.iter() {
                // NaN compares unequal to itself; compare bit patterns for doubles.
                match (again.get(id), v) {
                    (Some(Value::Double(a)), Value::Double(b)) => prop_assert_eq!(a.to_bits(), b.to_bits()),
                    (got, want) => prop_assert_eq!(got, Some(want.reborrow())),
                }
            }
        }
    }

    #[test]
    fn corrupted_valid_encodings_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let (vocab, bytes) = valid_bytes();
        let mut bytes = bytes;
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let _ = decode_bytes(&vocab, &bytes);
    }
}
