//! Cache keys built from exactly the attributes a decision referenced.
//!
//! A [`KeyShape`] is the canonical, sorted set of references of one decision (which attributes
//! and map keys it looked at, and whether each was present). A request fits a shape when every
//! `Absent` reference is still absent and every `Exact` one is present; its [`ShapeKey`] is then
//! the shape's id followed by the encoded values of the `Exact` references. The full key is kept
//! and compared, never only its hash.

use mixer_attr::{Bag, Presence, Reference, ReferencedAttributes, Value};

/// The references of one decision, canonically ordered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyShape {
    refs: Vec<Reference>,
    /// For each whole-attribute reference: true when only its presence matters (a map whose
    /// keys are referenced separately).
    presence_only: Vec<bool>,
}

/// A request's key under one shape: full bytes, compared in full.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeKey(pub(crate) Vec<u8>);

/// Lets the cache look a key up by the bytes of a reused buffer, without copying them.
impl std::borrow::Borrow<[u8]> for ShapeKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl KeyShape {
    /// The shape of `referenced`.
    pub fn new(referenced: &ReferencedAttributes) -> KeyShape {
        let refs = referenced.sorted();
        let presence_only = refs
            .iter()
            .map(|r| {
                r.map_key.is_none()
                    && r.presence == Presence::Exact
                    && refs.iter().any(|o| o.attr == r.attr && o.map_key.is_some())
            })
            .collect();
        KeyShape {
            refs,
            presence_only,
        }
    }

    /// Number of references.
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    /// True when the decision referenced nothing (it holds for every request).
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// The key of `bag` under this shape, or `None` when the request does not fit it.
    pub fn key(&self, shape_id: u32, bag: &dyn Bag, buf: &mut Vec<u8>) -> Option<ShapeKey> {
        self.encode(shape_id, bag, buf)
            .then(|| ShapeKey(buf.clone()))
    }

    /// Writes the key of `bag` under this shape into `buf`; false when the request does not fit.
    pub(crate) fn encode(&self, shape_id: u32, bag: &dyn Bag, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        buf.extend_from_slice(&shape_id.to_le_bytes());
        for (r, presence_only) in self.refs.iter().zip(&self.presence_only) {
            // Read in place where the bag stores values (no copy to drop).
            let fetched;
            let value = match bag.get_stored(r.attr) {
                Some(stored) => stored,
                None => {
                    fetched = bag.get(r.attr);
                    fetched.as_ref()
                }
            };
            let present = match (&r.map_key, value) {
                (None, v) => v.is_some(),
                (Some(k), Some(Value::StringMap(m))) => {
                    let entry = m.get(k);
                    if r.presence == Presence::Exact
                        && let Some(s) = entry
                    {
                        encode_str(buf, s);
                    }
                    entry.is_some()
                }
                (Some(_), _) => false,
            };
            if present != (r.presence == Presence::Exact) {
                return false;
            }
            if r.map_key.is_none()
                && present
                && !presence_only
                && let Some(v) = value
            {
                encode_value(buf, v);
            }
        }
        true
    }
}

fn encode_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Type tag + payload; strings length-prefixed so no two values share an encoding.
pub(crate) fn encode_value(buf: &mut Vec<u8>, v: &Value<'_>) {
    buf.push(v.value_type() as u8);
    match v {
        Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
            encode_str(buf, s)
        }
        Value::Int64(i) => buf.extend_from_slice(&i.to_le_bytes()),
        Value::Double(d) => buf.extend_from_slice(&d.to_bits().to_le_bytes()),
        Value::Bool(b) => buf.push(u8::from(*b)),
        Value::Timestamp(t) => buf.extend_from_slice(&t.unix_nanos().to_le_bytes()),
        Value::Duration(d) => buf.extend_from_slice(&d.as_nanos().to_le_bytes()),
        Value::IpAddress(ip) => match ip.to_canonical() {
            std::net::IpAddr::V4(a) => {
                buf.push(4);
                buf.extend_from_slice(&a.octets())
            }
            std::net::IpAddr::V6(a) => {
                buf.push(6);
                buf.extend_from_slice(&a.octets())
            }
        },
        Value::StringMap(m) => {
            let map = m.to_map();
            buf.extend_from_slice(&(map.len() as u64).to_le_bytes());
            for (k, v) in &map {
                encode_str(buf, k);
                encode_str(buf, v);
            }
        }
    }
}
