//! Attribute bag: build a bag of ~20 typical Istio attributes, encode it in compressed form, and
//! decode it again. Figures in README.md ("Attribute bag").

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mixer_attr::compressed::{decode, decode_bytes, encode, encode_bytes};
use mixer_attr::{
    Attributes, Duration, StringMap, StringMapRef, Timestamp, Value, Vocabulary, well_known as wk,
};

/// What a host holds for one request: header buffers and cached workload metadata.
struct Host {
    headers: Vec<(&'static str, &'static str)>,
    source_labels: StringMap,
    destination_labels: StringMap,
    source_ip: IpAddr,
    destination_ip: IpAddr,
}

fn host() -> Host {
    let labels = |app: &str, version: &str| -> StringMap {
        [
            ("app", app),
            ("version", version),
            ("pod-template-hash", "7d4b9c6f5d"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    Host {
        headers: vec![
            (":authority", "reviews.default.svc.cluster.local:9080"),
            (":method", "GET"),
            (":path", "/reviews/0?page=2"),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/115.0",
            ),
            ("accept", "application/json"),
            ("x-request-id", "2f9a1c3e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
            ("x-forwarded-proto", "http"),
        ],
        source_labels: labels("productpage", "v1"),
        destination_labels: labels("reviews", "v2"),
        source_ip: "10.44.0.21"
            .parse()
            .unwrap_or(IpAddr::from([10, 44, 0, 21])),
        destination_ip: "10.44.0.37"
            .parse()
            .unwrap_or(IpAddr::from([10, 44, 0, 37])),
    }
}

/// 21 attributes, strings and maps borrowed from the host as an Envoy filter would.
fn build<'h>(h: &'h Host, headers: &'h &'h [(&'h str, &'h str)]) -> Attributes<'h> {
    let mut bag = Attributes::with_capacity(24);
    bag.set(
        wk::REQUEST_HEADERS,
        Value::StringMap(StringMapRef::Borrowed(headers)),
    );
    bag.set(
        wk::REQUEST_HOST,
        Value::str("reviews.default.svc.cluster.local:9080"),
    );
    bag.set(wk::REQUEST_METHOD, Value::str("GET"));
    bag.set(wk::REQUEST_PATH, Value::str("/reviews/0?page=2"));
    bag.set(
        wk::REQUEST_ID,
        Value::str("2f9a1c3e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"),
    );
    bag.set(
        wk::REQUEST_USERAGENT,
        Value::str("Mozilla/5.0 (X11; Linux x86_64) Firefox/115.0"),
    );
    bag.set(
        wk::REQUEST_TIME,
        Value::Timestamp(Timestamp::new(1_700_000_000, 123_456_789)),
    );
    bag.set(wk::REQUEST_SIZE, Value::Int64(0));
    bag.set(wk::SOURCE_IP, Value::IpAddress(h.source_ip));
    bag.set(
        wk::SOURCE_NAME,
        Value::str("productpage-v1-6b746f74dc-9stvs"),
    );
    bag.set(wk::SOURCE_NAMESPACE, Value::str("default"));
    bag.set(
        wk::SOURCE_LABELS,
        Value::StringMap(StringMapRef::Borrowed(&h.source_labels)),
    );
    bag.set(wk::DESTINATION_IP, Value::IpAddress(h.destination_ip));
    bag.set(
        wk::DESTINATION_NAME,
        Value::str("reviews-v2-7bf8c9648f-xcvd2"),
    );
    bag.set(wk::DESTINATION_NAMESPACE, Value::str("default"));
    bag.set(
        wk::DESTINATION_LABELS,
        Value::StringMap(StringMapRef::Borrowed(&h.destination_labels)),
    );
    bag.set(wk::DESTINATION_PORT, Value::Int64(9080));
    bag.set(wk::RESPONSE_CODE, Value::Int64(200));
    bag.set(wk::RESPONSE_SIZE, Value::Int64(295));
    bag.set(
        wk::RESPONSE_DURATION,
        Value::Duration(Duration::from_nanos(4_312_000)),
    );
    bag.set(
        wk::RESPONSE_TIME,
        Value::Timestamp(Timestamp::new(1_700_000_000, 127_768_789)),
    );
    bag
}

fn attr_bag(c: &mut Criterion) {
    let vocab = Vocabulary::istio();
    let h = host();
    let headers: &[(&str, &str)] = &h.headers;
    let bag = build(&h, &headers);
    let msg = encode(&vocab, &bag);
    let bytes = encode_bytes(&vocab, &bag);
    assert_eq!(
        decode_bytes(&vocab, &bytes).map(|b| b.len()).ok(),
        Some(bag.len())
    );
    eprintln!(
        "attr_bag: {} attributes, {} encoded bytes, {} per-message words",
        bag.len(),
        bytes.len(),
        msg.words.len()
    );

    let mut g = c.benchmark_group("attr_bag");
    g.throughput(Throughput::Elements(1));
    g.bench_function("build_21", |b| {
        b.iter(|| build(black_box(&h), black_box(&headers)))
    });
    g.bench_function("encode_message", |b| {
        b.iter(|| encode(&vocab, black_box(&bag)))
    });
    g.bench_function("encode_bytes", |b| {
        b.iter(|| encode_bytes(&vocab, black_box(&bag)))
    });
    g.bench_function("decode_message", |b| {
        b.iter(|| decode(&vocab, black_box(&msg)))
    });
    g.bench_function("decode_bytes", |b| {
        b.iter(|| decode_bytes(&vocab, black_box(&bytes)))
    });
    g.finish();
}

criterion_group!(benches, attr_bag);
criterion_main!(benches);
