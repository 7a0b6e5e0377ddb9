//! Ingest: a proxy's request (its headers and connection facts) as Istio attributes.
//!
//! [`request_attributes`] is the one mapping every host uses (the C++ bridge and Rust proxies
//! alike). It borrows the host's header list and strings (nothing is copied or allocated), and
//! checks byte strings for UTF-8 only when the pipeline first reads them, once each. The result,
//! [`RequestAttributes`], is a [`Bag`] with a fixed slot per mapped attribute: filling it is a
//! store per attribute (no search), reading it one table look-up; any further attribute goes to
//! [`RequestAttributes::set`].

use std::cell::Cell;
use std::net::IpAddr;

use crate::bag::{Attributes, Bag};
use crate::time_values::Timestamp;
use crate::value::{StringMap, StringMapRef, StringMapView, Value};
use crate::vocabulary::{AttrId, ISTIO_ATTRIBUTES, well_known as wk};

/// A string as the host holds it: known UTF-8, or bytes that are checked when first read (a
/// value that is not UTF-8 reads as absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Text<'a> {
    /// The raw bytes.
    pub fn as_bytes(self) -> &'a [u8] {
        match self {
            Text::Str(s) => s.as_bytes(),
            Text::Bytes(b) => b,
        }
    }

    /// The string, or `None` when the bytes are not UTF-8.
    pub fn to_str(self) -> Option<&'a str> {
        match self {
            Text::Str(s) => Some(s),
            Text::Bytes(b) => std::str::from_utf8(b).ok(),
        }
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text::Str(s)
    }
}

impl<'a> From<&'a [u8]> for Text<'a> {
    fn from(b: &'a [u8]) -> Self {
        Text::Bytes(b)
    }
}

/// A host's request header list: readable as the `request.headers` map and walkable in order.
/// Names are compared as bytes, so hosts pass them lowercase (as HTTP/2 and Envoy do).
pub trait HeaderSource: StringMapView {
    /// Calls `f` with every header's name and value, in order.
    fn for_each_header<'s>(&'s self, f: impl FnMut(&'s [u8], Text<'s>));
}

impl HeaderSource for &[(&str, &str)] {
    fn for_each_header<'s>(&'s self, mut f: impl FnMut(&'s [u8], Text<'s>)) {
        for (k, v) in self.iter() {
            f(k.as_bytes(), Text::Str(v))
        }
    }
}

impl HeaderSource for StringMap {
    fn for_each_header<'s>(&'s self, mut f: impl FnMut(&'s [u8], Text<'s>)) {
        for (k, v) in self {
            f(k.as_bytes(), Text::Str(v))
        }
    }
}

impl HeaderSource for Vec<(String, String)> {
    fn for_each_header<'s>(&'s self, mut f: impl FnMut(&'s [u8], Text<'s>)) {
        for (k, v) in self {
            f(k.as_bytes(), Text::Str(v))
        }
    }
}

impl<S: std::hash::BuildHasher + Send + Sync> HeaderSource
    for std::collections::HashMap<String, String, S>
{
    fn for_each_header<'s>(&'s self, mut f: impl FnMut(&'s [u8], Text<'s>)) {
        for (k, v) in self {
            f(k.as_bytes(), Text::Str(v))
        }
    }
}

/// What the host knows about the connection. `None` is unknown (the attribute is left out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connection<'a> {
    pub source_ip: Option<IpAddr>,
    pub source_port: Option<i64>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: Option<i64>,
    /// The peer's identity from mTLS (`spiffe://...`); also `source.user`.
    pub source_principal: Option<Text<'a>>,
    pub destination_principal: Option<Text<'a>>,
    /// SNI.
    pub requested_server_name: Option<Text<'a>>,
    pub mtls: bool,
}

/// Slots of the text attributes (checked for UTF-8 on first read), then of the others.
const PATH: usize = 0;
const URL_PATH: usize = 1;
const METHOD: usize = 2;
const HOST: usize = 3;
const SCHEME: usize = 4;
const USERAGENT: usize = 5;
const REFERER: usize = 6;
const ID: usize = 7;
const SOURCE_PRINCIPAL: usize = 8;
const SOURCE_USER: usize = 9;
const DESTINATION_PRINCIPAL: usize = 10;
const SNI: usize = 11;
const TEXT_SLOTS: usize = 12;
const HEADERS: usize = 12;
const PROTOCOL: usize = 13;
const TIME: usize = 14;
const SOURCE_IP: usize = 15;
const SOURCE_PORT: usize = 16;
const DESTINATION_IP: usize = 17;
const DESTINATION_PORT: usize = 18;
const MTLS: usize = 19;

/// The attribute of each slot.
const SLOT_IDS: [AttrId; 20] = [
    wk::REQUEST_PATH,
    wk::REQUEST_URL_PATH,
    wk::REQUEST_METHOD,
    wk::REQUEST_HOST,
    wk::REQUEST_SCHEME,
    wk::REQUEST_USERAGENT,
    wk::REQUEST_REFERER,
    wk::REQUEST_ID,
    wk::SOURCE_PRINCIPAL,
    wk::SOURCE_USER,
    wk::DESTINATION_PRINCIPAL,
    wk::CONNECTION_REQUESTED_SERVER_NAME,
    wk::REQUEST_HEADERS,
    wk::CONTEXT_PROTOCOL,
    wk::REQUEST_TIME,
    wk::SOURCE_IP,
    wk::SOURCE_PORT,
    wk::DESTINATION_IP,
    wk::DESTINATION_PORT,
    wk::CONNECTION_MTLS,
];

const NO_SLOT: u8 = u8::MAX;

/// Slot of each built-in attribute id (`NO_SLOT`: not mapped).
static SLOT_OF: [u8; ISTIO_ATTRIBUTES.len()] = {
    let mut table = [NO_SLOT; ISTIO_ATTRIBUTES.len()];
    let mut slot = 0;
    while slot < SLOT_IDS.len() {
        table[SLOT_IDS[slot].0 as usize] = slot as u8;
        slot += 1;
    }
    table
};

fn slot_of(id: AttrId) -> usize {
    usize::from(SLOT_OF.get(id.index()).copied().unwrap_or(NO_SLOT))
}

/// A text slot: absent, the host's text until first read, then the checked string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Slot<'a> {
    #[default]
    Absent,
    Raw(Text<'a>),
    Checked(&'a str),
}

/// A request's attributes as [`request_attributes`] mapped them, borrowing the host's buffers
/// for `'a`. Mapped values are stored as the host's references (nothing to drop) and handed out
/// by [`Bag::get`]; attributes added with [`RequestAttributes::set`] are stored as values and
/// shadow mapped ones. Not `Sync` (text is checked on first read); [`Attributes::copy_of`]
/// keeps them past the request.
#[derive(Clone, Default)]
pub struct RequestAttributes<'a> {
    text: [Cell<Slot<'a>>; TEXT_SLOTS],
    headers: Option<&'a dyn StringMapView>,
    protocol: Option<&'static str>,
    time: Option<Timestamp>,
    source_ip: Option<IpAddr>,
    source_port: Option<i64>,
    destination_ip: Option<IpAddr>,
    destination_port: Option<i64>,
    mtls: Option<bool>,
    extra: Attributes<'a>,
}

impl std::fmt::Debug for RequestAttributes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        self.for_each(&mut |id, v| {
            m.entry(&id, &v);
        });
        m.finish()
    }
}

impl<'a> RequestAttributes<'a> {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `id` to `value`, replacing any earlier value (mapped or set).
    pub fn set(&mut self, id: AttrId, value: Value<'a>) {
        self.extra.set(id, value);
    }

    /// Makes room for `n` attributes set with [`Self::set`] (e.g. a report's `response.*`).
    pub fn reserve(&mut self, n: usize) {
        if self.extra.is_empty() {
            self.extra = Attributes::with_capacity(n);
        }
    }

    /// A text slot's string (checked for UTF-8 on the first read only).
    fn text(&self, slot: usize) -> Option<&'a str> {
        let cell = self.text.get(slot)?;
        match cell.get() {
            Slot::Checked(s) => Some(s),
            Slot::Absent => None,
            Slot::Raw(raw) => {
                let s = raw.to_str();
                let s = if slot == URL_PATH {
                    s.map(|p| p.split_once('?').map_or(p, |(p, _)| p))
                } else {
                    s
                };
                cell.set(s.map_or(Slot::Absent, Slot::Checked));
                s
            }
        }
    }

    /// The mapped value of `slot`.
    #[inline]
    fn mapped(&self, slot: usize) -> Option<Value<'a>> {
        match slot {
            HEADERS => self
                .headers
                .map(|h| Value::StringMap(StringMapRef::Borrowed(h))),
            PROTOCOL => self.protocol.map(Value::str),
            TIME => self.time.map(Value::Timestamp),
            SOURCE_IP => self.source_ip.map(Value::IpAddress),
            SOURCE_PORT => self.source_port.map(Value::Int64),
            DESTINATION_IP => self.destination_ip.map(Value::IpAddress),
            DESTINATION_PORT => self.destination_port.map(Value::Int64),
            MTLS => self.mtls.map(Value::Bool),
            _ => self.text(slot).map(Value::str),
        }
    }
}

impl Bag for RequestAttributes<'_> {
    #[inline]
    fn get(&self, id: AttrId) -> Option<Value<'_>> {
        if !self.extra.is_empty()
            && let Some(v) = self.extra.get(id)
        {
            return Some(v);
        }
        self.mapped(slot_of(id))
    }
    /// In place for attributes added with `set`; `None` (use `get`) for mapped ones.
    #[inline]
    fn get_stored(&self, id: AttrId) -> Option<Option<&Value<'_>>> {
        if let Some(v) = self.extra.get_stored(id).flatten() {
            return Some(Some(v));
        }
        if slot_of(id) == usize::from(NO_SLOT) {
            Some(None)
        } else {
            None
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(AttrId, Value<'_>)) {
        for (slot, id) in SLOT_IDS.into_iter().enumerate() {
            if self.extra.get(id).is_none()
                && let Some(v) = self.mapped(slot)
            {
                f(id, v)
            }
        }
        self.extra.for_each(f)
    }
}

/// Maps a request onto Istio attributes (the shape Istio's proxy filled): `request.headers` (the
/// list itself, borrowed), `request.path` (`:path`), `request.url_path` (the path up to `?`),
/// `request.method`, `request.host` (`:authority`, else the first `host`), `request.scheme`,
/// `request.useragent`, `request.referer`, `request.id` (`x-request-id`), `context.protocol`
/// (`grpc` for `application/grpc*` content, else `http`), `request.time` (`now`), and from
/// `connection`: `source.ip`/`source.port`, `destination.ip`/`destination.port`,
/// `source.principal` (and `source.user`), `destination.principal`, `connection.mtls`,
/// `connection.requested_server_name`. Where a header repeats, the last one counts.
#[inline]
pub fn request_attributes<'a, H: HeaderSource>(
    headers: &'a H,
    connection: &Connection<'a>,
    now: Timestamp,
) -> RequestAttributes<'a> {
    // Built in place (the caller's slot), the header scan filling the text cells.
    let r = RequestAttributes {
        text: Default::default(),
        headers: Some(headers),
        protocol: Some("http"),
        time: Some(now),
        source_ip: connection.source_ip,
        source_port: connection.source_port,
        destination_ip: connection.destination_ip,
        destination_port: connection.destination_port,
        mtls: Some(connection.mtls),
        extra: Attributes::new(),
    };
    let set = |slot: usize, value: Option<Text<'a>>| {
        if let (Some(cell), Some(v)) = (r.text.get(slot), value) {
            cell.set(Slot::Raw(v));
        }
    };
    let mut grpc = false;
    let (mut authority, mut host) = (None, None);
    headers.for_each_header(|name, value| match name {
        b":path" => {
            set(PATH, Some(value));
            set(URL_PATH, Some(value));
        }
        b":method" => set(METHOD, Some(value)),
        b":authority" => authority = Some(value),
        b"host" => host = host.or(Some(value)),
        b":scheme" => set(SCHEME, Some(value)),
        b"user-agent" => set(USERAGENT, Some(value)),
        b"referer" => set(REFERER, Some(value)),
        b"x-request-id" => set(ID, Some(value)),
        b"content-type" => grpc |= value.as_bytes().starts_with(b"application/grpc"),
        _ => {}
    });
    set(HOST, authority.or(host));
    set(SOURCE_PRINCIPAL, connection.source_principal);
    set(SOURCE_USER, connection.source_principal);
    set(DESTINATION_PRINCIPAL, connection.destination_principal);
    set(SNI, connection.requested_server_name);
    let mut r = r;
    if grpc {
        r.protocol = Some("grpc");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/client";

    fn connection() -> Connection<'static> {
        Connection {
            source_ip: "10.0.0.7".parse().ok(),
            source_port: Some(43210),
            destination_ip: "10.0.0.9".parse().ok(),
            destination_port: Some(9080),
            source_principal: Some(Text::Str(SPIFFE)),
            destination_principal: None,
            requested_server_name: Some(Text::Bytes(b"reviews")),
            mtls: true,
        }
    }

    fn text(bag: &dyn Bag, id: AttrId) -> Option<String> {
        bag.get(id).map(|v| v.to_string())
    }

    #[test]
    fn maps_headers_and_connection() {
        let headers: &[(&str, &str)] = &[
            ("host", "ignored:80"),
            (":method", "POST"),
            (":path", "/api/v1?x=1"),
            (":authority", "reviews:9080"),
            (":scheme", "https"),
            ("user-agent", "curl"),
            ("referer", "/home"),
            ("x-request-id", "r-1"),
            ("content-type", "application/grpc+proto"),
        ];
        let now = Timestamp::new(1_700_000_000, 5);
        let bag = request_attributes(&headers, &connection(), now);
        let want = [
            (wk::REQUEST_PATH, "/api/v1?x=1"),
            (wk::REQUEST_URL_PATH, "/api/v1"),
            (wk::REQUEST_METHOD, "POST"),
            (wk::REQUEST_HOST, "reviews:9080"),
            (wk::REQUEST_SCHEME, "https"),
            (wk::REQUEST_USERAGENT, "curl"),
            (wk::REQUEST_REFERER, "/home"),
            (wk::REQUEST_ID, "r-1"),
            (wk::CONTEXT_PROTOCOL, "grpc"),
            (wk::SOURCE_PRINCIPAL, SPIFFE),
            (wk::SOURCE_USER, SPIFFE),
            (wk::CONNECTION_REQUESTED_SERVER_NAME, "reviews"),
            (wk::SOURCE_IP, "10.0.0.7"),
            (wk::DESTINATION_IP, "10.0.0.9"),
            (wk::SOURCE_PORT, "43210"),
            (wk::DESTINATION_PORT, "9080"),
            (wk::CONNECTION_MTLS, "true"),
        ];
        for (id, v) in want {
            assert_eq!(text(&bag, id).as_deref(), Some(v), "attribute {id:?}");
        }
        assert_eq!(bag.get(wk::REQUEST_TIME), Some(Value::Timestamp(now)));
        assert_eq!(bag.get(wk::DESTINATION_PRINCIPAL), None);
        assert_eq!(bag.get(wk::RESPONSE_CODE), None);
        let map = bag.get(wk::REQUEST_HEADERS).and_then(|v| {
            v.as_string_map()
                .map(|m| m.get("x-request-id").map(str::to_string))
        });
        assert_eq!(map, Some(Some("r-1".to_string())));
        assert_eq!(format!("{bag:?}").matches("AttrId").count(), want.len() + 2);
    }

    #[test]
    fn host_falls_back_and_protocol_defaults_to_http() {
        let headers: StringMap = [("host", "a:1"), (":path", "/")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let bag = request_attributes(&headers, &Connection::default(), Timestamp::new(0, 0));
        assert_eq!(text(&bag, wk::REQUEST_HOST).as_deref(), Some("a:1"));
        assert_eq!(text(&bag, wk::CONTEXT_PROTOCOL).as_deref(), Some("http"));
        assert_eq!(text(&bag, wk::CONNECTION_MTLS).as_deref(), Some("false"));
        assert_eq!(bag.get(wk::SOURCE_IP), None);
        assert_eq!(bag.get(wk::SOURCE_PRINCIPAL), None);
    }

    /// A byte-string header list, as a C++ host hands it over.
    struct Raw(Vec<(&'static [u8], &'static [u8])>);

    impl StringMapView for Raw {
        fn get(&self, key: &str) -> Option<&str> {
            let v = self.0.iter().find(|(k, _)| *k == key.as_bytes())?.1;
            std::str::from_utf8(v).ok()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn for_each_entry(&self, _: &mut dyn FnMut(&str, &str)) {}
    }

    impl HeaderSource for Raw {
        fn for_each_header<'s>(&'s self, mut f: impl FnMut(&'s [u8], Text<'s>)) {
            for (k, v) in &self.0 {
                f(k, Text::Bytes(v))
            }
        }
    }

    #[test]
    fn bytes_are_checked_once_when_read_and_bad_utf8_is_absent() {
        let headers = Raw(vec![
            (&b":path"[..], &b"/ok?q=\xff"[..]),
            (&b":method"[..], &b"G\xffT"[..]),
            (&b"user-agent"[..], &b"agent"[..]),
        ]);
        let bag = request_attributes(&headers, &Connection::default(), Timestamp::new(0, 0));
        let state = |slot: usize| bag.text[slot].get();
        assert_eq!(state(USERAGENT), Slot::Raw(Text::Bytes(b"agent")));
        assert_eq!(bag.get(wk::REQUEST_METHOD), None);
        assert_eq!(state(METHOD), Slot::Absent, "a bad value is checked once");
        assert_eq!(bag.get(wk::REQUEST_PATH), None);
        assert_eq!(bag.get(wk::REQUEST_URL_PATH), None, "url_path follows path");
        assert_eq!(
            state(USERAGENT),
            Slot::Raw(Text::Bytes(b"agent")),
            "only what is read"
        );
        assert_eq!(text(&bag, wk::REQUEST_USERAGENT).as_deref(), Some("agent"));
        assert_eq!(state(USERAGENT), Slot::Checked("agent"));
        assert_eq!(
            bag.get_stored(wk::REQUEST_USERAGENT),
            None,
            "mapped: use get"
        );
        assert_eq!(bag.get_stored(wk::RESPONSE_CODE), Some(None));
    }

    #[test]
    fn set_replaces_mapped_values_and_adds_others() {
        let headers: &[(&str, &str)] = &[(":path", "/a")];
        let mut bag = request_attributes(&headers, &connection(), Timestamp::new(0, 0));
        bag.set(wk::REQUEST_PATH, Value::str("/b"));
        bag.set(wk::SOURCE_PORT, Value::Int64(1));
        bag.set(wk::RESPONSE_CODE, Value::Int64(404));
        bag.set(wk::RESPONSE_CODE, Value::Int64(200));
        assert_eq!(bag.get(wk::REQUEST_PATH), Some(Value::str("/b")));
        assert_eq!(bag.get(wk::SOURCE_PORT), Some(Value::Int64(1)));
        assert_eq!(bag.get(wk::RESPONSE_CODE), Some(Value::Int64(200)));
        assert_eq!(
            bag.get_stored(wk::REQUEST_PATH),
            Some(Some(&Value::str("/b")))
        );
        // An id beyond the built-in vocabulary (declared by config) is kept too.
        let custom = AttrId(ISTIO_ATTRIBUTES.len() as u32 + 3);
        bag.set(custom, Value::str("x"));
        assert_eq!(bag.get(custom), Some(Value::str("x")));
        let mut seen = Vec::new();
        bag.for_each(&mut |id, _| seen.push(id));
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(seen.len(), unique.len(), "each attribute once");
        assert!(seen.contains(&wk::RESPONSE_CODE) && seen.contains(&custom));
        assert!(!seen.contains(&wk::REQUEST_REFERER));
        assert_eq!(Attributes::copy_of(&bag).len(), seen.len());
    }
}
