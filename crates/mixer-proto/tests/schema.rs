//! Smoke tests of the generated schema: enum numbering and encode/decode of the main messages.

use mixer_proto::prost::Message;
use mixer_proto::prost_types;
use mixer_proto::v2::{
    AttributeMatch, AttributeValue, CheckRequest, CheckResponse, CompressedAttributes, Config,
    Handler, PreconditionResult, QuotaParams, ReferencedAttributes, ReportRequest, RouteDirective,
    Status, ValueType, attribute_match, header_operation, report_request,
};

#[test]
fn value_type_uses_mixer_numbering() {
    let expected = [
        (ValueType::Unspecified, 0, "VALUE_TYPE_UNSPECIFIED"),
        (ValueType::String, 1, "STRING"),
        (ValueType::Int64, 2, "INT64"),
        (ValueType::Double, 3, "DOUBLE"),
        (ValueType::Bool, 4, "BOOL"),
        (ValueType::Timestamp, 5, "TIMESTAMP"),
        (ValueType::IpAddress, 6, "IP_ADDRESS"),
        (ValueType::EmailAddress, 7, "EMAIL_ADDRESS"),
        (ValueType::Uri, 8, "URI"),
        (ValueType::DnsName, 9, "DNS_NAME"),
        (ValueType::Duration, 10, "DURATION"),
        (ValueType::StringMap, 11, "STRING_MAP"),
    ];
    for (t, n, name) in expected {
        assert_eq!(t as i32, n);
        assert_eq!(t.as_str_name(), name);
        assert_eq!(ValueType::from_str_name(name), Some(t));
        assert_eq!(ValueType::try_from(n), Ok(t));
    }
    assert!(ValueType::try_from(12).is_err());
}

#[test]
fn check_messages_round_trip() {
    let req = CheckRequest {
        attributes: Some(CompressedAttributes {
            words: vec!["x".into()],
            strings: [(7, -1)].into(),
            global_word_count: 10,
            ..Default::default()
        }),
        global_word_count: 10,
        deduplication_id: "id-1".into(),
        quotas: [(
            "rq".to_string(),
            QuotaParams {
                amount: 2,
                best_effort: true,
            },
        )]
        .into(),
    };
    let bytes = req.encode_to_vec();
    assert_eq!(CheckRequest::decode(&bytes[..]).unwrap(), req);

    let resp = CheckResponse {
        precondition: Some(PreconditionResult {
            status: Some(Status {
                code: 7,
                message: "denied".into(),
            }),
            valid_duration: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            valid_use_count: 100,
            referenced_attributes: Some(ReferencedAttributes {
                words: vec![],
                attribute_matches: vec![AttributeMatch {
                    name: 3,
                    condition: attribute_match::Condition::Exact as i32,
                    regex: String::new(),
                    map_key: 0,
                }],
            }),
            route_directive: Some(RouteDirective {
                request_header_operations: vec![],
                response_header_operations: vec![mixer_proto::v2::HeaderOperation {
                    name: "x-denied".into(),
                    value: "1".into(),
                    operation: header_operation::Operation::Append as i32,
                }],
                direct_response_code: 403,
                direct_response_body: "no".into(),
            }),
        }),
        quotas: Default::default(),
    };
    assert_eq!(
        CheckResponse::decode(&resp.encode_to_vec()[..]).unwrap(),
        resp
    );
}

#[test]
fn report_and_config_round_trip() {
    let req = ReportRequest {
        attributes: vec![CompressedAttributes::default(); 2],
        default_words: vec!["a".into()],
        global_word_count: 3,
        repeated_attributes_semantics:
            report_request::RepeatedAttributesSemantics::IndependentEncoding as i32,
    };
    assert_eq!(
        ReportRequest::decode(&req.encode_to_vec()[..]).unwrap(),
        req
    );

    let config = Config {
        handlers: vec![Handler {
            name: "quota".into(),
            namespace: "istio-system".into(),
            adapter: "memquota".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(Config::decode(&config.encode_to_vec()[..]).unwrap(), config);

    let v = AttributeValue {
        value: Some(mixer_proto::v2::attribute_value::Value::IpAddressValue(
            vec![10, 0, 0, 1],
        )),
    };
    assert_eq!(AttributeValue::decode(&v.encode_to_vec()[..]).unwrap(), v);
}
