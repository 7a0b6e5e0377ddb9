//! Typed attribute values: the 11 value types of Mixer's attribute model.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::time_values::{Duration, Timestamp};

/// The type of an attribute or expression (Mixer's `ValueType`, minus `VALUE_TYPE_UNSPECIFIED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueType {
    String,
    Int64,
    Double,
    Bool,
    Timestamp,
    IpAddress,
    EmailAddress,
    Uri,
    DnsName,
    Duration,
    StringMap,
}

impl ValueType {
    /// All value types, in the order of Mixer's enum.
    pub const ALL: [ValueType; 11] = [
        ValueType::String,
        ValueType::Int64,
        ValueType::Double,
        ValueType::Bool,
        ValueType::Timestamp,
        ValueType::IpAddress,
        ValueType::EmailAddress,
        ValueType::Uri,
        ValueType::DnsName,
        ValueType::Duration,
        ValueType::StringMap,
    ];

    /// Mixer's spelling: `STRING`, `INT64`, `IP_ADDRESS`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "STRING",
            ValueType::Int64 => "INT64",
            ValueType::Double => "DOUBLE",
            ValueType::Bool => "BOOL",
            ValueType::Timestamp => "TIMESTAMP",
            ValueType::IpAddress => "IP_ADDRESS",
            ValueType::EmailAddress => "EMAIL_ADDRESS",
            ValueType::Uri => "URI",
            ValueType::DnsName => "DNS_NAME",
            ValueType::Duration => "DURATION",
            ValueType::StringMap => "STRING_MAP",
        }
    }

    /// True for the types whose payload is a string (STRING, EMAIL_ADDRESS, URI, DNS_NAME).
    pub fn is_string_like(self) -> bool {
        matches!(
            self,
            ValueType::String | ValueType::EmailAddress | ValueType::Uri | ValueType::DnsName
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type name that is not one of Mixer's value types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown value type `{0}` (expected one of STRING, INT64, DOUBLE, BOOL, TIMESTAMP, IP_ADDRESS, EMAIL_ADDRESS, URI, DNS_NAME, DURATION, STRING_MAP)"
)]
pub struct ValueTypeParseError(pub String);

impl std::str::FromStr for ValueType {
    type Err = ValueTypeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ValueType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ValueTypeParseError(s.to_string()))
    }
}

/// An owned string map, sorted by key (deterministic encoding and printing).
pub type StringMap = BTreeMap<String, String>;

/// Read access to a string map owned by somebody else (a host's header map, a bag's map).
///
/// Implemented for [`StringMap`], `HashMap<String, String>` and `&[(&str, &str)]` pair slices,
/// so a host can expose its header list without copying it.
pub trait StringMapView: Send + Sync {
    /// The value for `key`, if present.
    fn get(&self, key: &str) -> Option<&str>;
    /// Number of entries.
    fn len(&self) -> usize;
    /// True when there are no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Calls `f` for every entry (not on the hot path: encoding, printing).
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str));
}

impl StringMapView for StringMap {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
    fn len(&self) -> usize {
        BTreeMap::len(self)
    }
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self {
            f(k, v)
        }
    }
}

impl<S: std::hash::BuildHasher + Send + Sync> StringMapView
    for std::collections::HashMap<String, String, S>
{
    fn get(&self, key: &str) -> Option<&str> {
        std::collections::HashMap::get(self, key).map(String::as_str)
    }
    fn len(&self) -> usize {
        std::collections::HashMap::len(self)
    }
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self {
            f(k, v)
        }
    }
}

impl StringMapView for &[(&str, &str)] {
    fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
    fn len(&self) -> usize {
        <[_]>::len(self)
    }
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self.iter() {
            f(k, v)
        }
    }
}

impl StringMapView for Vec<(String, String)> {
    fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self {
            f(k, v)
        }
    }
}

static EMPTY_MAP: StringMap = BTreeMap::new();

/// A string-map value: borrowed from the host or shared (reference-counted) when owned.
#[derive(Clone)]
pub enum StringMapRef<'a> {
    Borrowed(&'a dyn StringMapView),
    Shared(Arc<StringMap>),
}

impl<'a> StringMapRef<'a> {
    /// The empty map (`emptyStringMap()`), without allocating.
    pub fn empty() -> StringMapRef<'static> {
        StringMapRef::Borrowed(&EMPTY_MAP)
    }

    /// The map as a view.
    pub fn view(&self) -> &dyn StringMapView {
        match self {
            StringMapRef::Borrowed(m) => *m,
            StringMapRef::Shared(m) => &**m,
        }
    }

    /// Looks up `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.view().get(key)
    }

    /// A copy of the entries, sorted by key.
    pub fn to_map(&self) -> StringMap {
        let mut out = StringMap::new();
        self.view().for_each_entry(&mut |k, v| {
            out.insert(k.to_string(), v.to_string());
        });
        out
    }

    /// A view that borrows from `self`, with no reference-count traffic.
    pub fn reborrow(&self) -> StringMapRef<'_> {
        StringMapRef::Borrowed(self.view())
    }
}

impl PartialEq for StringMapRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.view(), other.view());
        if a.len() != b.len() {
            return false;
        }
        let mut same = true;
        a.for_each_entry(&mut |k, v| {
            if same && b.get(k) != Some(v) {
                same = false;
            }
        });
        same
    }
}

impl fmt::Debug for StringMapRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.to_map()).finish()
    }
}

/// A typed attribute value. Strings and maps are borrowed where possible (`'a` is the lifetime of
/// the host's buffers or of the bag that owns them); `Value<'static>` is a fully owned value.
// `repr(u64)`: every variant's payload starts at offset 8, word-aligned, so a value moves as
// four aligned words (by default an IP address sits at offset 1, and every move of a value
// copies bytes 1-7 piecewise, which later wide loads stall on).
#[derive(Clone, Debug, PartialEq)]
#[repr(u64)]
pub enum Value<'a> {
    String(Cow<'a, str>),
    Int64(i64),
    Double(f64),
    Bool(bool),
    Timestamp(Timestamp),
    IpAddress(IpAddr),
    EmailAddress(Cow<'a, str>),
    Uri(Cow<'a, str>),
    DnsName(Cow<'a, str>),
    Duration(Duration),
    StringMap(StringMapRef<'a>),
}

impl<'a> Value<'a> {
    /// True when the value owns heap memory (an owned string or a shared map): only such
    /// values need their destructor run.
    #[inline(always)]
    pub fn owns_memory(&self) -> bool {
        matches!(
            self,
            Value::String(Cow::Owned(_))
                | Value::EmailAddress(Cow::Owned(_))
                | Value::Uri(Cow::Owned(_))
                | Value::DnsName(Cow::Owned(_))
                | Value::StringMap(StringMapRef::Shared(_))
        )
    }

    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::String(_) => ValueType::String,
            Value::Int64(_) => ValueType::Int64,
            Value::Double(_) => ValueType::Double,
            Value::Bool(_) => ValueType::Bool,
            Value::Timestamp(_) => ValueType::Timestamp,
            Value::IpAddress(_) => ValueType::IpAddress,
            Value::EmailAddress(_) => ValueType::EmailAddress,
            Value::Uri(_) => ValueType::Uri,
            Value::DnsName(_) => ValueType::DnsName,
            Value::Duration(_) => ValueType::Duration,
            Value::StringMap(_) => ValueType::StringMap,
        }
    }

    /// A borrowed string value.
    pub fn str(s: &'a str) -> Value<'a> {
        Value::String(Cow::Borrowed(s))
    }

    /// The string payload of STRING, EMAIL_ADDRESS, URI and DNS_NAME values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
                Some(s)
            }
            _ => None,
        }
    }

    /// The string map payload of a STRING_MAP value.
    pub fn as_string_map(&self) -> Option<&StringMapRef<'a>> {
        match self {
            Value::StringMap(m) => Some(m),
            _ => None,
        }
    }

    /// A view of this value that borrows from it (no allocation, no reference counting).
    #[inline]
    pub fn reborrow(&self) -> Value<'_> {
        match self {
            Value::String(s) => Value::String(Cow::Borrowed(s)),
            Value::EmailAddress(s) => Value::EmailAddress(Cow::Borrowed(s)),
            Value::Uri(s) => Value::Uri(Cow::Borrowed(s)),
            Value::DnsName(s) => Value::DnsName(Cow::Borrowed(s)),
            Value::StringMap(m) => Value::StringMap(m.reborrow()),
            Value::Int64(v) => Value::Int64(*v),
            Value::Double(v) => Value::Double(*v),
            Value::Bool(v) => Value::Bool(*v),
            Value::Timestamp(v) => Value::Timestamp(*v),
            Value::IpAddress(v) => Value::IpAddress(*v),
            Value::Duration(v) => Value::Duration(*v),
        }
    }

    /// A fully owned copy.
    pub fn into_owned(self) -> Value<'static> {
        fn own(s: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(s.into_owned())
        }
        match self {
            Value::String(s) => Value::String(own(s)),
            Value::EmailAddress(s) => Value::EmailAddress(own(s)),
            Value::Uri(s) => Value::Uri(own(s)),
            Value::DnsName(s) => Value::DnsName(own(s)),
            Value::StringMap(StringMapRef::Shared(m)) => Value::StringMap(StringMapRef::Shared(m)),
            Value::StringMap(m) => Value::StringMap(StringMapRef::Shared(Arc::new(m.to_map()))),
            Value::Int64(v) => Value::Int64(v),
            Value::Double(v) => Value::Double(v),
            Value::Bool(v) => Value::Bool(v),
            Value::Timestamp(v) => Value::Timestamp(v),
            Value::IpAddress(v) => Value::IpAddress(v),
            Value::Duration(v) => Value::Duration(v),
        }
    }

    /// An owned STRING_MAP value.
    pub fn string_map(map: StringMap) -> Value<'static> {
        Value::StringMap(StringMapRef::Shared(Arc::new(map)))
    }
}

/// Human-readable form: strings bare, timestamps RFC 3339, durations `1.5s`, maps `{k: v}`.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
                f.write_str(s)
            }
            Value::Int64(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Timestamp(v) => write!(f, "{v}"),
            Value::IpAddress(v) => write!(f, "{v}"),
            Value::Duration(v) => write!(f, "{v}"),
            Value::StringMap(m) => {
                f.write_str("{")?;
                let mut first = true;
                let mut res = Ok(());
                m.view().for_each_entry(&mut |k, v| {
                    if res.is_ok() {
                        res = write!(f, "{}{k}: {v}", if first { "" } else { ", " });
                        first = false;
                    }
                });
                res?;
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip() {
        for t in ValueType::ALL {
            assert_eq!(t.as_str().parse::<ValueType>().unwrap(), t);
        }
        assert!("STRINGS".parse::<ValueType>().is_err());
    }

    #[test]
    fn map_equality_ignores_representation() {
        let owned: StringMap = [("a".to_string(), "1".to_string())].into_iter().collect();
        let pairs: &[(&str, &str)] = &[("a", "1")];
        let a = Value::StringMap(StringMapRef::Borrowed(&pairs));
        let b = Value::string_map(owned);
        assert_eq!(a, b);
        assert_eq!(a.clone().into_owned(), b);
        assert_ne!(Value::StringMap(StringMapRef::empty()), b);
    }

    #[test]
    fn reborrow_and_display() {
        let v = Value::String(Cow::Owned("x".into()));
        assert_eq!(v.reborrow(), Value::str("x"));
        assert_eq!(v.to_string(), "x");
        let m: StringMap = [("k".into(), "v".into())].into_iter().collect();
        assert_eq!(Value::string_map(m).to_string(), "{k: v}");
    }
}

#[cfg(test)]
mod layout_tests {
    use super::Value;

    #[test]
    fn values_stay_four_words() {
        assert_eq!(std::mem::size_of::<Value<'_>>(), 32);
        assert_eq!(std::mem::size_of::<Option<Value<'_>>>(), 32);
    }
}
