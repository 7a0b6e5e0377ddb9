//! The compressed attribute form (`mixer.v2.CompressedAttributes`, Mixer V1's wire format).
//!
//! Every string on the wire (attribute names, string values, map keys and values) is a *word
//! index*: a non-negative index `i` is the `i`-th word of the global dictionary [`GLOBAL_WORDS`],
//! which sender and receiver share; a negative index `-1, -2, ...` is `words[0], words[1], ...` of
//! the message itself. The global dictionary starts with the names of [`ISTIO_ATTRIBUTES`] in id
//! order (so the global index of a well-known attribute equals its [`AttrId`]), followed by
//! common header names and values. It only ever grows at the end: a message records how many
//! global words its sender knew (`global_word_count`), and a receiver rejects indices beyond
//! what either side knows.
//!
//! The receiver's [`Vocabulary`] gives each attribute its type: STRING, EMAIL_ADDRESS, URI and
//! DNS_NAME all travel as strings; IP addresses travel as 4 or 16 raw bytes.
//!
//! [`decode`] never panics: malformed input of any kind is a [`DecodeError`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use mixer_proto::prost_types;
use mixer_proto::v2::{CompressedAttributes, StringMap as WireStringMap};
use prost::Message;

use crate::bag::{Attributes, Bag};
use crate::time_values::{Duration, Timestamp};
use crate::value::{StringMap, Value, ValueType};
use crate::vocabulary::{AttrId, ISTIO_ATTRIBUTES, Vocabulary};

/// Words of the global dictionary after the Istio attribute names: header names, and values that
/// are common in a mesh. Append only: existing indices must never change.
const EXTRA_WORDS: &[&str] = &[
    // HTTP/2 pseudo-headers.
    ":authority",
    ":method",
    ":path",
    ":scheme",
    ":status",
    // Request and response headers.
    "accept",
    "accept-encoding",
    "accept-language",
    "access-control-allow-origin",
    "age",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expires",
    "grpc-accept-encoding",
    "grpc-encoding",
    "grpc-message",
    "grpc-status",
    "grpc-timeout",
    "host",
    "if-modified-since",
    "if-none-match",
    "keep-alive",
    "last-modified",
    "location",
    "origin",
    "pragma",
    "proxy-authorization",
    "referer",
    "server",
    "set-cookie",
    "strict-transport-security",
    "te",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
    "x-b3-flags",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-spanid",
    "x-b3-traceid",
    "x-content-type-options",
    "x-envoy-attempt-count",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
    "x-envoy-internal",
    "x-envoy-original-path",
    "x-envoy-peer-metadata",
    "x-envoy-peer-metadata-id",
    "x-envoy-upstream-service-time",
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-frame-options",
    "x-istio-attributes",
    "x-ot-span-context",
    "x-real-ip",
    "x-request-id",
    "x-xss-protection",
    // Methods.
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    // Status codes (as header values).
    "200",
    "201",
    "204",
    "301",
    "302",
    "304",
    "400",
    "401",
    "403",
    "404",
    "405",
    "408",
    "429",
    "500",
    "502",
    "503",
    "504",
    // gRPC status codes (as `grpc-status` values).
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "7",
    "8",
    "13",
    "14",
    "16",
    // Content types and encodings.
    "application/json",
    "application/grpc",
    "application/grpc+proto",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
    "application/xml",
    "text/html",
    "text/html; charset=utf-8",
    "text/plain",
    "text/plain; charset=utf-8",
    "*/*",
    "gzip",
    "deflate",
    "gzip, deflate",
    "gzip, deflate, br",
    "identity",
    "br",
    "chunked",
    "close",
    "no-cache",
    "private",
    "nosniff",
    "en-US,en;q=0.9",
    "trailers",
    // Schemes and protocols.
    "http",
    "https",
    "grpc",
    "tcp",
    "HTTP/1.0",
    "HTTP/1.1",
    "HTTP/2",
    "h2",
    "h2c",
    "http/1.1",
    "envoy",
    "istio-envoy",
    "Go-http-client/1.1",
    "curl/7.58.0",
    // Mesh values.
    "inbound",
    "outbound",
    "source",
    "destination",
    "proxy",
    "client",
    "open",
    "continue",
    "kubernetes://",
    "spiffe://",
    "spiffe://cluster.local/ns/default/sa/default",
    "cluster.local",
    "svc.cluster.local",
    "istio-system",
    "istio-ingressgateway",
    "istio-egressgateway",
    "istio-policy",
    "istio-telemetry",
    "istio-pilot",
    "kube-system",
    "default",
    "app",
    "version",
    "v1",
    "v2",
    "v3",
    "pod-template-hash",
    "controller-revision-hash",
    "security.istio.io/tlsMode",
    "service.istio.io/canonical-name",
    "service.istio.io/canonical-revision",
    "istio",
    "mutual_tls",
    "-",
    "",
    "true",
    "false",
    // Envoy response flags (`context.proxy_error_code`).
    "UH",
    "UF",
    "UO",
    "NR",
    "URX",
    "UT",
    "UC",
    "DC",
    "LH",
    "LR",
    "RL",
    "UAEX",
    "RLSE",
];

const GLOBAL_LEN: usize = ISTIO_ATTRIBUTES.len() + EXTRA_WORDS.len();

const fn build_global_words() -> [&'static str; GLOBAL_LEN] {
    let mut out = [""; GLOBAL_LEN];
    let mut i = 0;
    while i < ISTIO_ATTRIBUTES.len() {
        out[i] = ISTIO_ATTRIBUTES[i].0;
        i += 1;
    }
    let mut j = 0;
    while j < EXTRA_WORDS.len() {
        out[ISTIO_ATTRIBUTES.len() + j] = EXTRA_WORDS[j];
        j += 1;
    }
    out
}

static GLOBAL_WORDS_ARRAY: [&str; GLOBAL_LEN] = build_global_words();

/// The global word dictionary: the names of [`ISTIO_ATTRIBUTES`] in id order, then common header
/// names and values. Deterministic and append-only.
pub static GLOBAL_WORDS: &[&str] = &GLOBAL_WORDS_ARRAY;

/// Number of words in [`GLOBAL_WORDS`] (what an encoder puts in `global_word_count`).
pub const GLOBAL_WORD_COUNT: u32 = GLOBAL_LEN as u32;

/// FNV-1a: words are short, and the dictionaries are not attacker-sized (the global one is fixed;
/// a per-message one is built by the encoder from its own bag), so a fast hash beats SipHash.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

struct GlobalIndex {
    index: FnvMap<&'static str, i32>,
    /// Longer words are not in the dictionary (skips hashing long values such as user agents).
    max_len: usize,
}

fn global_index() -> &'static GlobalIndex {
    static INDEX: OnceLock<GlobalIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index = FnvMap::default();
        for (i, w) in GLOBAL_WORDS.iter().enumerate() {
            index.entry(*w).or_insert(i as i32);
        }
        let max_len = GLOBAL_WORDS.iter().map(|w| w.len()).max().unwrap_or(0);
        GlobalIndex { index, max_len }
    })
}

/// The global index of `word`, if it is in [`GLOBAL_WORDS`] (the first one, should a word appear
/// twice).
pub fn global_word_index(word: &str) -> Option<i32> {
    let g = global_index();
    if word.len() > g.max_len {
        return None;
    }
    g.index.get(word).copied()
}

/// Why a compressed attribute message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error(
        "word index {index} is out of range (global dictionary: {global_words} words usable, \
         message dictionary: {message_words} words)"
    )]
    WordIndexOutOfRange {
        index: i32,
        global_words: u32,
        message_words: usize,
    },
    #[error("unknown attribute `{0}` (not in the vocabulary; declare it in an attribute manifest)")]
    UnknownAttribute(String),
    #[error("attribute `{name}` is declared as {declared} but was encoded as {encoded_as}")]
    TypeMismatch {
        name: String,
        declared: ValueType,
        encoded_as: &'static str,
    },
    #[error("attribute `{name}`: an IP address must be 4 or 16 bytes, got {len}")]
    BadIpLength { name: String, len: usize },
    #[error("attribute `{name}`: timestamp {seconds}s {nanos}ns is out of range")]
    TimestampOutOfRange {
        name: String,
        seconds: i64,
        nanos: i32,
    },
    #[error("attribute `{name}`: duration {seconds}s {nanos}ns is out of range")]
    DurationOutOfRange {
        name: String,
        seconds: i64,
        nanos: i32,
    },
    #[error("attribute `{0}` appears more than once")]
    DuplicateAttribute(String),
}

/// Below this many per-message words a linear scan beats hashing.
const LINEAR_WORDS: usize = 16;

/// The per-message dictionary under construction.
#[derive(Default)]
struct MessageWords {
    words: Vec<String>,
    /// Built only once `words` outgrows [`LINEAR_WORDS`].
    index: FnvMap<String, i32>,
}

impl MessageWords {
    /// The word index of `word`: global when it can be, otherwise per message (added once).
    fn index_of(&mut self, word: &str) -> i32 {
        if let Some(i) = global_word_index(word) {
            return i;
        }
        let found = if self.words.len() <= LINEAR_WORDS {
            self.words.iter().position(|w| w == word).map(message_index)
        } else {
            if self.index.is_empty() {
                self.index = self
                    .words
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (w.clone(), message_index(i)))
                    .collect();
            }
            self.index.get(word).copied()
        };
        if let Some(i) = found {
            return i;
        }
        let i = message_index(self.words.len());
        self.words.push(word.to_owned());
        if !self.index.is_empty() {
            self.index.insert(word.to_owned(), i);
        }
        i
    }
}

/// The wire index of `words[pos]`: `-1 - pos` (saturating; no bag holds 2^31 distinct words).
fn message_index(pos: usize) -> i32 {
    i32::try_from(pos).map_or(i32::MIN, |p| -1 - p)
}

/// The word index of an attribute name: its id when it is a well-known Istio attribute at its
/// built-in id (no hashing), otherwise looked up like any word.
fn name_index(words: &mut MessageWords, id: AttrId, name: &str) -> i32 {
    match ISTIO_ATTRIBUTES.get(id.index()) {
        Some((well_known, _)) if *well_known == name => id.0 as i32,
        _ => words.index_of(name),
    }
}

/// Encodes `bag` in compressed form. Attribute names come from `vocab`.
///
/// Words in [`GLOBAL_WORDS`] are sent as global indices; every other word is stored once in the
/// message's `words`. Attributes whose id is not in `vocab` are skipped (no receiver could name
/// them). A value is encoded by its own kind; a receiver whose vocabulary declares another type
/// rejects it with [`DecodeError::TypeMismatch`].
pub fn encode(vocab: &Vocabulary, bag: &dyn Bag) -> CompressedAttributes {
    let mut words = MessageWords::default();
    let mut msg = CompressedAttributes {
        global_word_count: GLOBAL_WORD_COUNT,
        ..Default::default()
    };
    bag.for_each(&mut |id, value| {
        if vocab.value_type(id).is_none() {
            return;
        }
        let name = name_index(&mut words, id, vocab.name(id));
        match value {
            Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
                let v = words.index_of(&s);
                msg.strings.insert(name, v);
            }
            Value::Int64(v) => {
                msg.int64s.insert(name, v);
            }
            Value::Double(v) => {
                msg.doubles.insert(name, v);
            }
            Value::Bool(v) => {
                msg.bools.insert(name, v);
            }
            Value::Timestamp(t) => {
                // subsec_nanos < 1e9 always fits an i32.
                let nanos = i32::try_from(t.subsec_nanos()).unwrap_or(0);
                msg.timestamps.insert(
                    name,
                    prost_types::Timestamp {
                        seconds: t.secs(),
                        nanos,
                    },
                );
            }
            Value::Duration(d) => {
                let n = d.as_nanos();
                // Truncating division: seconds and nanos share the sign, as protobuf requires.
                let nanos = i32::try_from(n % 1_000_000_000).unwrap_or(0);
                msg.durations.insert(
                    name,
                    prost_types::Duration {
                        seconds: n / 1_000_000_000,
                        nanos,
                    },
                );
            }
            Value::IpAddress(IpAddr::V4(ip)) => {
                msg.bytes.insert(name, ip.octets().to_vec());
            }
            Value::IpAddress(IpAddr::V6(ip)) => {
                msg.bytes.insert(name, ip.octets().to_vec());
            }
            Value::StringMap(m) => {
                let mut entries = BTreeMap::new();
                m.view().for_each_entry(&mut |k, v| {
                    let k = words.index_of(k);
                    let v = words.index_of(v);
                    entries.insert(k, v);
                });
                msg.string_maps.insert(name, WireStringMap { entries });
            }
        }
    });
    msg.words = words.words;
    msg
}

/// [`encode`], then the protobuf encoding of the message.
pub fn encode_bytes(vocab: &Vocabulary, bag: &dyn Bag) -> Vec<u8> {
    encode(vocab, bag).encode_to_vec()
}

/// A resolved word.
enum Word<'m> {
    Global(&'static str),
    Message(&'m str),
}

/// Resolves word indices of one message.
struct Dictionary<'m> {
    words: &'m [String],
    /// Global indices below this are known to both sides.
    global_limit: u32,
}

impl<'m> Dictionary<'m> {
    fn new(msg: &'m CompressedAttributes) -> Self {
        Dictionary {
            words: &msg.words,
            global_limit: msg.global_word_count.min(GLOBAL_WORD_COUNT),
        }
    }

    fn word(&self, index: i32) -> Result<&'m str, DecodeError> {
        self.lookup(index).map(|w| match w {
            Word::Global(w) => w,
            Word::Message(w) => w,
        })
    }

    /// The word at `index` as an owned value: a global word is borrowed for `'static` (no
    /// allocation), a message word is copied.
    fn owned_word(&self, index: i32) -> Result<Cow<'static, str>, DecodeError> {
        self.lookup(index).map(|w| match w {
            Word::Global(w) => Cow::Borrowed(w),
            Word::Message(w) => Cow::Owned(w.to_owned()),
        })
    }

    fn lookup(&self, index: i32) -> Result<Word<'m>, DecodeError> {
        let found = if index >= 0 {
            u32::try_from(index)
                .ok()
                .filter(|&i| i < self.global_limit)
                .and_then(|i| GLOBAL_WORDS.get(i as usize).copied())
                .map(Word::Global)
        } else {
            // -1 -> 0, -2 -> 1, ...; i64 so that i32::MIN does not overflow.
            usize::try_from(-i64::from(index) - 1)
                .ok()
                .and_then(|i| self.words.get(i))
                .map(|w| Word::Message(w.as_str()))
        };
        found.ok_or(DecodeError::WordIndexOutOfRange {
            index,
            global_words: self.global_limit,
            message_words: self.words.len(),
        })
    }

    /// The attribute named by word `index`: its id, name and declared type.
    fn attribute(
        &self,
        vocab: &Vocabulary,
        index: i32,
    ) -> Result<(AttrId, &'m str, ValueType), DecodeError> {
        let name = self.word(index)?;
        // Fast path: a well-known name at its built-in id.
        if let Ok(i) = u32::try_from(index)
            && let Some(ty) = vocab.value_type(AttrId(i))
            && vocab.name(AttrId(i)) == name
        {
            return Ok((AttrId(i), name, ty));
        }
        vocab
            .lookup_typed(name)
            .map(|(id, ty)| (id, name, ty))
            .ok_or_else(|| DecodeError::UnknownAttribute(name.to_owned()))
    }
}

fn mismatch(name: &str, declared: ValueType, encoded_as: &'static str) -> DecodeError {
    DecodeError::TypeMismatch {
        name: name.to_owned(),
        declared,
        encoded_as,
    }
}

/// Adds an attribute, rejecting a second value for the same attribute (two indices may spell the
/// same name, or one name may appear in two maps).
fn insert(
    bag: &mut Attributes<'static>,
    id: AttrId,
    name: &str,
    value: Value<'static>,
) -> Result<(), DecodeError> {
    let before = bag.len();
    bag.set(id, value);
    if bag.len() == before {
        return Err(DecodeError::DuplicateAttribute(name.to_owned()));
    }
    Ok(())
}

/// Protobuf's Timestamp range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
const MIN_TIMESTAMP_SECS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECS: i64 = 253_402_300_799;

fn timestamp(name: &str, t: &prost_types::Timestamp) -> Result<Timestamp, DecodeError> {
    let in_range = (MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS).contains(&t.seconds)
        && (0..1_000_000_000).contains(&t.nanos);
    match u32::try_from(t.nanos) {
        Ok(nanos) if in_range => Ok(Timestamp::new(t.seconds, nanos)),
        _ => Err(DecodeError::TimestampOutOfRange {
            name: name.to_owned(),
            seconds: t.seconds,
            nanos: t.nanos,
        }),
    }
}

fn duration(name: &str, d: &prost_types::Duration) -> Result<Duration, DecodeError> {
    let signs_agree = (d.seconds >= 0 && d.nanos >= 0) || (d.seconds <= 0 && d.nanos <= 0);
    let total = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
    match i64::try_from(total) {
        Ok(n) if signs_agree && d.nanos.unsigned_abs() < 1_000_000_000 => {
            Ok(Duration::from_nanos(n))
        }
        _ => Err(DecodeError::DurationOutOfRange {
            name: name.to_owned(),
            seconds: d.seconds,
            nanos: d.nanos,
        }),
    }
}

fn ip(name: &str, bytes: &[u8]) -> Result<IpAddr, DecodeError> {
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        Ok(IpAddr::V4(Ipv4Addr::from(b)))
    } else if let Ok(b) = <[u8; 16]>::try_from(bytes) {
        Ok(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        Err(DecodeError::BadIpLength {
            name: name.to_owned(),
            len: bytes.len(),
        })
    }
}

/// Decodes a compressed message into an owned bag, checking every attribute against `vocab`.
///
/// Fails on word indices outside either dictionary (global indices must be below both the
/// message's `global_word_count` and [`GLOBAL_WORD_COUNT`]), names missing from `vocab`, values
/// in a map that does not fit the declared type, IP addresses that are not 4 or 16 bytes,
/// timestamps or durations out of range, and attributes given twice.
pub fn decode(
    vocab: &Vocabulary,
    msg: &CompressedAttributes,
) -> Result<Attributes<'static>, DecodeError> {
    let dict = Dictionary::new(msg);
    let total = msg.strings.len()
        + msg.int64s.len()
        + msg.doubles.len()
        + msg.bools.len()
        + msg.timestamps.len()
        + msg.durations.len()
        + msg.bytes.len()
        + msg.string_maps.len();
    let mut bag = Attributes::with_capacity(total);

    for (&n, &v) in &msg.strings {
        let (id, name, ty) = dict.attribute(vocab, n)?;
        let s = dict.owned_word(v)?;
        let value = match ty {
            ValueType::String => Value::String(s),
            ValueType::EmailAddress => Value::EmailAddress(s),
            ValueType::Uri => Value::Uri(s),
            ValueType::DnsName => Value::DnsName(s),
            other => return Err(mismatch(name, other, "a string")),
        };
        insert(&mut bag, id, name, value)?;
    }
    for (&n, &v) in &msg.int64s {
        let (id, name, ty) = dict.attribute(vocab, n)?;
        if ty != ValueType::Int64 {
            return Err(mismatch(name, ty, "an int64"));
        }
        insert(&mut bag, id, name, Value::Int64(v))?;
    }
    for (&n, &v) in &msg.doubles {
        let (id, name, ty) = dict.attribute(vocab, n)?;
        if ty != ValueType::Double {
            return Err(mismatch(name, ty, "a double"));
        }
        insert(&mut bag, id, name, Value::Double(v))?;
    }
    for (&n, &v) in &msg.bools {
        let (id, name, ty) = dict.attribute(vocab, n)?;
        if ty != ValueType::Bool {
            return Err(mismatch(name, ty, "a bool"));
        }
        insert(&mut bag, id, name, Value::Bool(v))?;
    }
    for (&n, t) in &msg.timestamps {
        let (id, name, ty) = dict.attribute(vocab, n)?;
        if ty != ValueType::Timestamp {
            return Err(mismatch(name, ty, "a timestamp"));
        }
        insert(&mut bag, id, name, Value::Timestamp(timestamp(name, t)?))?;
    }
    for (&n, d) in &msg.durations {
        let (id, name, ty) = dict.attribute(vocab, n)?;
        if ty != ValueType::Duration {
            return Err(mismatch(name, ty, "a duration"));
        }
        insert(&mut bag, id, name, Value::Duration(duration(name, d)?))?;
    }
    for (&n, b) in &msg.bytes {
        let (id, name, ty) = dict.attribute(vocab, n)?;
        if ty != ValueType::IpAddress {
            return Err(mismatch(name, ty, "bytes"));
        }
        insert(&mut bag, id, name, Value::IpAddress(ip(name, b)?))?;
    }
    for (&n, m) in &msg.string_maps {
        let (id, name, ty) = dict.attribute(vocab, n)?;
        if ty != ValueType::StringMap {
            return Err(mismatch(name, ty, "a string map"));
        }
        let mut map = StringMap::new();
        for (&k, &v) in &m.entries {
            // Distinct key indices may spell the same key; the last one wins, as in a header map.
            map.insert(dict.word(k)?.to_owned(), dict.word(v)?.to_owned());
        }
        insert(&mut bag, id, name, Value::string_map(map))?;
    }
    Ok(bag)
}

/// Decodes the protobuf encoding of a `CompressedAttributes` message, then [`decode`]s it.
pub fn decode_bytes(vocab: &Vocabulary, bytes: &[u8]) -> Result<Attributes<'static>, DecodeError> {
    let msg = CompressedAttributes::decode(bytes)?;
    decode(vocab, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::well_known as wk;

    #[test]
    fn global_words_start_with_istio_attributes_and_are_unique() {
        for (i, (name, _)) in ISTIO_ATTRIBUTES.iter().enumerate() {
            assert_eq!(GLOBAL_WORDS[i], *name);
            assert_eq!(global_word_index(name), Some(i as i32));
        }
        assert_eq!(GLOBAL_WORDS.len(), GLOBAL_WORD_COUNT as usize);
        assert!(
            (100..=400).contains(&GLOBAL_WORDS.len()),
            "{}",
            GLOBAL_WORDS.len()
        );
        let mut seen = std::collections::HashSet::new();
        for w in GLOBAL_WORDS {
            assert!(
                seen.insert(*w),
                "`{w}` appears twice in the global dictionary"
            );
        }
        assert_eq!(
            global_word_index(":authority"),
            Some(ISTIO_ATTRIBUTES.len() as i32)
        );
        assert_eq!(global_word_index("no-such-word"), None);
    }

    #[test]
    fn message_words_switch_to_hashing_and_stay_unique() {
        let mut w = MessageWords::default();
        let names: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        for _ in 0..2 {
            for (i, n) in names.iter().enumerate() {
                assert_eq!(w.index_of(n), -1 - i as i32);
            }
        }
        assert_eq!(w.words, names);
        assert_eq!(w.index_of("GET"), global_word_index("GET").unwrap());
    }

    #[test]
    fn global_count_limits_known_indices() {
        let vocab = Vocabulary::istio();
        let bag = Attributes::new().with(wk::REQUEST_METHOD, Value::str("GET"));
        let mut msg = encode(&vocab, &bag);
        assert!(msg.words.is_empty());
        assert_eq!(decode(&vocab, &msg).unwrap(), bag);
        // A sender that knew only the attribute names cannot have used the word "GET".
        msg.global_word_count = ISTIO_ATTRIBUTES.len() as u32;
        assert!(matches!(
            decode(&vocab, &msg),
            Err(DecodeError::WordIndexOutOfRange { global_words, .. })
                if global_words == ISTIO_ATTRIBUTES.len() as u32
        ));
        // A sender with a longer dictionary than ours: indices we know still decode.
        msg.global_word_count = GLOBAL_WORD_COUNT + 50;
        assert_eq!(decode(&vocab, &msg).unwrap(), bag);
    }

    #[test]
    fn durations_and_timestamps_at_the_edges() {
        for n in [
            i64::MIN,
            i64::MIN + 1,
            -1_500_000_000,
            -1,
            0,
            1,
            999_999_999,
            i64::MAX,
        ] {
            let d = Duration::from_nanos(n);
            let vocab = Vocabulary::istio();
            let bag = Attributes::new().with(wk::RESPONSE_DURATION, Value::Duration(d));
            assert_eq!(decode(&vocab, &encode(&vocab, &bag)).unwrap(), bag, "{n}");
        }
        let bad = [
            prost_types::Duration {
                seconds: 1,
                nanos: -1,
            },
            prost_types::Duration {
                seconds: -1,
                nanos: 1,
            },
            prost_types::Duration {
                seconds: 0,
                nanos: 1_000_000_000,
            },
            prost_types::Duration {
                seconds: i64::MAX,
                nanos: 0,
            },
            prost_types::Duration {
                seconds: 9_223_372_036,
                nanos: 854_775_808,
            },
        ];
        for d in bad {
            assert!(duration("d", &d).is_err(), "{d:?}");
        }
        for (s, n) in [
            (MIN_TIMESTAMP_SECS, 0),
            (MAX_TIMESTAMP_SECS, 999_999_999),
            (0, 0),
        ] {
            assert!(
                timestamp(
                    "t",
                    &prost_types::Timestamp {
                        seconds: s,
                        nanos: n
                    }
                )
                .is_ok()
            );
        }
        for (s, n) in [
            (MIN_TIMESTAMP_SECS - 1, 0),
            (MAX_TIMESTAMP_SECS + 1, 0),
            (0, -1),
            (0, 1_000_000_000),
        ] {
            assert!(
                timestamp(
                    "t",
                    &prost_types::Timestamp {
                        seconds: s,
                        nanos: n
                    }
                )
                .is_err()
            );
        }
    }
}
