//! The attribute vocabulary: attribute names interned to dense ids, with their types.
//!
//! Istio's built-in vocabulary ([`ISTIO_ATTRIBUTES`], the `istioproxy` and `kubernetes` attribute
//! manifests of Istio 1.4) always occupies the first ids, in list order, so a host can build bags
//! with the stable constants of [`well_known`] without asking the running config. Attribute
//! manifests from config extend it with further ids.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::value::ValueType;

/// An interned attribute name: an index into a [`Vocabulary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrId(pub u32);

impl AttrId {
    /// The index as `usize`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

macro_rules! istio_attributes {
    ($($konst:ident = ($name:literal, $ty:ident),)*) => {
        /// Stable ids of Istio's built-in attributes (valid in every [`Vocabulary::istio`]).
        pub mod well_known {
            use super::AttrId;
            istio_attributes!(@consts 0u32; $($konst,)*);
        }
        /// Istio's built-in attributes, in id order.
        pub const ISTIO_ATTRIBUTES: &[(&str, ValueType)] = &[$(($name, ValueType::$ty),)*];
    };
    (@consts $n:expr; $konst:ident, $($rest:ident,)*) => {
        #[allow(missing_docs)]
        pub const $konst: AttrId = AttrId($n);
        istio_attributes!(@consts $n + 1u32; $($rest,)*);
    };
    (@consts $n:expr;) => {};
}

istio_attributes! {
ORIGIN_IP = ("origin.ip", IpAddress),
ORIGIN_UID = ("origin.uid", String),
ORIGIN_USER = ("origin.user", String),
REQUEST_HEADERS = ("request.headers", StringMap),
REQUEST_ID = ("request.id", String),
REQUEST_HOST = ("request.host", String),
REQUEST_METHOD = ("request.method", String),
REQUEST_PATH = ("request.path", String),
REQUEST_URL_PATH = ("request.url_path", String),
REQUEST_QUERY_PARAMS = ("request.query_params", StringMap),
REQUEST_REASON = ("request.reason", String),
REQUEST_REFERER = ("request.referer", String),
REQUEST_SCHEME = ("request.scheme", String),
REQUEST_TOTAL_SIZE = ("request.total_size", Int64),
REQUEST_SIZE = ("request.size", Int64),
REQUEST_TIME = ("request.time", Timestamp),
REQUEST_USERAGENT = ("request.useragent", String),
RESPONSE_CODE = ("response.code", Int64),
RESPONSE_DURATION = ("response.duration", Duration),
RESPONSE_HEADERS = ("response.headers", StringMap),
RESPONSE_TOTAL_SIZE = ("response.total_size", Int64),
RESPONSE_SIZE = ("response.size", Int64),
RESPONSE_TIME = ("response.time", Timestamp),
RESPONSE_GRPC_STATUS = ("response.grpc_status", String),
RESPONSE_GRPC_MESSAGE = ("response.grpc_message", String),
SOURCE_UID = ("source.uid", String),
SOURCE_USER = ("source.user", String),
SOURCE_PRINCIPAL = ("source.principal", String),
DESTINATION_UID = ("destination.uid", String),
DESTINATION_PRINCIPAL = ("destination.principal", String),
DESTINATION_PORT = ("destination.port", Int64),
CONNECTION_EVENT = ("connection.event", String),
CONNECTION_ID = ("connection.id", String),
CONNECTION_RECEIVED_BYTES = ("connection.received.bytes", Int64),
CONNECTION_RECEIVED_BYTES_TOTAL = ("connection.received.bytes_total", Int64),
CONNECTION_SENT_BYTES = ("connection.sent.bytes", Int64),
CONNECTION_SENT_BYTES_TOTAL = ("connection.sent.bytes_total", Int64),
CONNECTION_DURATION = ("connection.duration", Duration),
CONNECTION_MTLS = ("connection.mtls", Bool),
CONNECTION_REQUESTED_SERVER_NAME = ("connection.requested_server_name", String),
CONTEXT_PROTOCOL = ("context.protocol", String),
CONTEXT_PROXY_ERROR_CODE = ("context.proxy_error_code", String),
CONTEXT_TIMESTAMP = ("context.timestamp", Timestamp),
CONTEXT_TIME = ("context.time", Timestamp),
CONTEXT_REPORTER_LOCAL = ("context.reporter.local", Bool),
CONTEXT_REPORTER_KIND = ("context.reporter.kind", String),
CONTEXT_REPORTER_UID = ("context.reporter.uid", String),
CONTEXT_PROXY_VERSION = ("context.proxy_version", String),
API_SERVICE = ("api.service", String),
API_VERSION = ("api.version", String),
API_OPERATION = ("api.operation", String),
API_PROTOCOL = ("api.protocol", String),
REQUEST_AUTH_PRINCIPAL = ("request.auth.principal", String),
REQUEST_AUTH_AUDIENCES = ("request.auth.audiences", String),
REQUEST_AUTH_PRESENTER = ("request.auth.presenter", String),
REQUEST_AUTH_CLAIMS = ("request.auth.claims", StringMap),
REQUEST_AUTH_RAW_CLAIMS = ("request.auth.raw_claims", String),
REQUEST_API_KEY = ("request.api_key", String),
RBAC_PERMISSIVE_RESPONSE_CODE = ("rbac.permissive.response_code", String),
RBAC_PERMISSIVE_EFFECTIVE_POLICY_ID = ("rbac.permissive.effective_policy_id", String),
CHECK_ERROR_CODE = ("check.error_code", Int64),
CHECK_ERROR_MESSAGE = ("check.error_message", String),
CHECK_CACHE_HIT = ("check.cache_hit", Bool),
QUOTA_CACHE_HIT = ("quota.cache_hit", Bool),
SOURCE_IP = ("source.ip", IpAddress),
SOURCE_LABELS = ("source.labels", StringMap),
SOURCE_METADATA = ("source.metadata", StringMap),
SOURCE_NAME = ("source.name", String),
SOURCE_NAMESPACE = ("source.namespace", String),
SOURCE_OWNER = ("source.owner", String),
SOURCE_SERVICEACCOUNT = ("source.serviceAccount", String),
SOURCE_SERVICES = ("source.services", String),
SOURCE_WORKLOAD_UID = ("source.workload.uid", String),
SOURCE_WORKLOAD_NAME = ("source.workload.name", String),
SOURCE_WORKLOAD_NAMESPACE = ("source.workload.namespace", String),
DESTINATION_IP = ("destination.ip", IpAddress),
DESTINATION_LABELS = ("destination.labels", StringMap),
DESTINATION_METADATA = ("destination.metadata", StringMap),
DESTINATION_OWNER = ("destination.owner", String),
DESTINATION_NAME = ("destination.name", String),
DESTINATION_CONTAINER_NAME = ("destination.container.name", String),
DESTINATION_NAMESPACE = ("destination.namespace", String),
DESTINATION_SERVICE_UID = ("destination.service.uid", String),
DESTINATION_SERVICE_NAME = ("destination.service.name", String),
DESTINATION_SERVICE_NAMESPACE = ("destination.service.namespace", String),
DESTINATION_SERVICE_HOST = ("destination.service.host", String),
DESTINATION_SERVICEACCOUNT = ("destination.serviceAccount", String),
DESTINATION_WORKLOAD_UID = ("destination.workload.uid", String),
DESTINATION_WORKLOAD_NAME = ("destination.workload.name", String),
DESTINATION_WORKLOAD_NAMESPACE = ("destination.workload.namespace", String),
SOURCE_PORT = ("source.port", Int64),
DESTINATION_SERVICE = ("destination.service", String),
CONTEXT_REPORTER_TYPE = ("context.reporter.type", String),}

/// A manifest entry that conflicts with the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VocabularyError {
    #[error("attribute `{name}` is declared as {new} but is already {existing}")]
    TypeConflict {
        name: String,
        existing: ValueType,
        new: ValueType,
    },
    #[error(
        "attribute name `{0}` is not valid (expected letters, digits, `.`, `_`, `-`, `/`, optionally a leading `$`)"
    )]
    BadName(String),
    #[error("the vocabulary is full ({0} attributes)")]
    Full(usize),
}

/// Maximum number of attributes in one vocabulary (bounded so config cannot exhaust memory).
pub const MAX_ATTRIBUTES: usize = 65_536;

/// Attribute names and types, interned to [`AttrId`]s.
#[derive(Clone, Debug, Default)]
pub struct Vocabulary {
    entries: Vec<(Arc<str>, ValueType)>,
    index: HashMap<Arc<str>, AttrId>,
}

impl Vocabulary {
    /// A vocabulary with no attributes (for custom manifests such as the expression test table).
    pub fn empty() -> Vocabulary {
        Vocabulary::default()
    }

    /// Istio's built-in vocabulary; ids equal the constants in [`well_known`].
    pub fn istio() -> Vocabulary {
        static ISTIO: OnceLock<Vocabulary> = OnceLock::new();
        ISTIO
            .get_or_init(|| {
                let mut v = Vocabulary::empty();
                for (name, ty) in ISTIO_ATTRIBUTES {
                    // The built-in list has unique, valid names.
                    let _ = v.declare(name, *ty);
                }
                v
            })
            .clone()
    }

    /// Declares `name` with type `ty`; returns its id. Declaring an existing name with the same
    /// type returns the existing id; with another type it is an error.
    pub fn declare(&mut self, name: &str, ty: ValueType) -> Result<AttrId, VocabularyError> {
        if let Some(&id) = self.index.get(name) {
            let existing = self.entries[id.index()].1;
            if existing != ty {
                return Err(VocabularyError::TypeConflict {
                    name: name.to_string(),
                    existing,
                    new: ty,
                });
            }
            return Ok(id);
        }
        if !valid_name(name) {
            return Err(VocabularyError::BadName(name.to_string()));
        }
        if self.entries.len() >= MAX_ATTRIBUTES {
            return Err(VocabularyError::Full(MAX_ATTRIBUTES));
        }
        let id = AttrId(self.entries.len() as u32);
        let name: Arc<str> = Arc::from(name);
        self.entries.push((name.clone(), ty));
        self.index.insert(name, id);
        Ok(id)
    }

    /// The id of `name`, if declared.
    pub fn lookup(&self, name: &str) -> Option<AttrId> {
        self.index.get(name).copied()
    }

    /// The id and type of `name`, if declared.
    pub fn lookup_typed(&self, name: &str) -> Option<(AttrId, ValueType)> {
        self.lookup(name).map(|id| (id, self.entries[id.index()].1))
    }

    /// The name of `id` (`"?"` for an id from another vocabulary).
    pub fn name(&self, id: AttrId) -> &str {
        self.entries
            .get(id.index())
            .map(|(n, _)| &**n)
            .unwrap_or("?")
    }

    /// The type of `id`, if it belongs to this vocabulary.
    pub fn value_type(&self, id: AttrId) -> Option<ValueType> {
        self.entries.get(id.index()).map(|(_, t)| *t)
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no attribute is declared.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All attributes in id order.
    pub fn iter(&self) -> impl Iterator<Item = (AttrId, &str, ValueType)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, (n, t))| (AttrId(i as u32), &**n, *t))
    }
}

fn valid_name(name: &str) -> bool {
    // `$` may lead a name: attribute-producing adapters bind their outputs as `$out.field`.
    let body = name.strip_prefix('$').unwrap_or(name);
    !body.is_empty()
        && name.len() <= 256
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_ids_are_stable() {
        let v = Vocabulary::istio();
        assert_eq!(v.len(), ISTIO_ATTRIBUTES.len());
        assert_eq!(
            v.lookup("request.headers"),
            Some(well_known::REQUEST_HEADERS)
        );
        assert_eq!(v.name(well_known::SOURCE_IP), "source.ip");
        assert_eq!(
            v.value_type(well_known::RESPONSE_CODE),
            Some(ValueType::Int64)
        );
        for (i, (name, _)) in ISTIO_ATTRIBUTES.iter().enumerate() {
            assert_eq!(v.lookup(name), Some(AttrId(i as u32)), "{name} duplicated?");
        }
    }

    #[test]
    fn declare_conflicts_and_bad_names() {
        let mut v = Vocabulary::istio();
        assert_eq!(
            v.declare("source.ip", ValueType::IpAddress),
            Ok(well_known::SOURCE_IP)
        );
        assert!(matches!(
            v.declare("source.ip", ValueType::String),
            Err(VocabularyError::TypeConflict { .. })
        ));
        assert!(matches!(
            v.declare("a b", ValueType::String),
            Err(VocabularyError::BadName(_))
        ));
        let id = v.declare("my.attr", ValueType::Double).unwrap();
        assert_eq!(id.index(), ISTIO_ATTRIBUTES.len());
    }
}
