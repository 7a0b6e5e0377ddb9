//! Attribute bags: what a request looks like to the pipeline.

use crate::value::Value;
use crate::vocabulary::AttrId;

/// Read access to a set of attributes.
///
/// `get` hands out views that borrow from the bag (no allocation, no reference counting), so an
/// expression can compare a header against a constant without copying it.
pub trait Bag {
    /// The value of `id`, or `None` when the attribute is absent.
    fn get(&self, id: AttrId) -> Option<Value<'_>>;

    /// The stored value of `id`, for bags that keep their values (expression evaluation reads
    /// it in place instead of receiving a copy from [`Bag::get`]): `Some(Some(v))` when present,
    /// `Some(None)` when absent, and `None` (the default) when the bag does not store values as
    /// [`Value`]s, in which case the caller uses [`Bag::get`].
    #[inline]
    fn get_stored(&self, id: AttrId) -> Option<Option<&Value<'_>>> {
        let _ = id;
        None
    }

    /// Calls `f` for every present attribute (encoding, printing; not the hot path). Where a
    /// layered bag holds the same id twice, only the upper value is visited.
    fn for_each(&self, f: &mut dyn FnMut(AttrId, Value<'_>));
}

impl<B: Bag + ?Sized> Bag for &B {
    fn get(&self, id: AttrId) -> Option<Value<'_>> {
        (**self).get(id)
    }
    #[inline]
    fn get_stored(&self, id: AttrId) -> Option<Option<&Value<'_>>> {
        (**self).get_stored(id)
    }
    fn for_each(&self, f: &mut dyn FnMut(AttrId, Value<'_>)) {
        (**self).for_each(f)
    }
}

/// A bag the host fills per request. Values may borrow from the host's buffers for `'a`.
///
/// Stored as a small vector: a request carries tens of attributes, for which a linear scan of
/// 4-byte ids beats hashing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes<'a> {
    entries: Vec<(AttrId, Value<'a>)>,
}

impl<'a> Attributes<'a> {
    /// An empty bag.
    pub fn new() -> Self {
        Attributes {
            entries: Vec::new(),
        }
    }

    /// An empty bag with room for `n` attributes.
    pub fn with_capacity(n: usize) -> Self {
        Attributes {
            entries: Vec::with_capacity(n),
        }
    }

    /// Sets `id` to `value`, replacing any earlier value.
    pub fn set(&mut self, id: AttrId, value: Value<'a>) {
        match self.entries.iter_mut().find(|(i, _)| *i == id) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((id, value)),
        }
    }

    /// Builder form of [`Attributes::set`].
    pub fn with(mut self, id: AttrId, value: Value<'a>) -> Self {
        self.set(id, value);
        self
    }

    /// Removes `id`, returning its value.
    pub fn remove(&mut self, id: AttrId) -> Option<Value<'a>> {
        let pos = self.entries.iter().position(|(i, _)| *i == id)?;
        Some(self.entries.swap_remove(pos).1)
    }

    /// Number of attributes present.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no attribute is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every attribute, keeping the allocation (bags are reused per worker).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The attributes in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (AttrId, &Value<'a>)> {
        self.entries.iter().map(|(i, v)| (*i, v))
    }

    /// The stored value of `id`. Compares four ids per step with one branch: most look-ups in a
    /// request's tens of attributes miss or land late, and a miss reads every id.
    #[inline]
    fn find(&self, id: AttrId) -> Option<&Value<'a>> {
        let mut rest = &self.entries[..];
        while let [a, b, c, d, tail @ ..] = rest {
            if (a.0 == id) | (b.0 == id) | (c.0 == id) | (d.0 == id) {
                break;
            }
            rest = tail;
        }
        rest.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    /// A fully owned copy (to keep past the host's buffers, e.g. for a buffered report).
    pub fn into_owned(self) -> Attributes<'static> {
        Attributes {
            entries: self
                .entries
                .into_iter()
                .map(|(i, v)| (i, v.into_owned()))
                .collect(),
        }
    }

    /// An owned copy of any bag.
    pub fn copy_of(bag: &dyn Bag) -> Attributes<'static> {
        let mut out = Attributes::new();
        bag.for_each(&mut |id, v| out.entries.push((id, v.into_owned())));
        out
    }
}

impl Bag for Attributes<'_> {
    #[inline]
    fn get(&self, id: AttrId) -> Option<Value<'_>> {
        self.find(id).map(Value::reborrow)
    }
    #[inline]
    fn get_stored(&self, id: AttrId) -> Option<Option<&Value<'_>>> {
        Some(self.find(id))
    }
    fn for_each(&self, f: &mut dyn FnMut(AttrId, Value<'_>)) {
        for (id, v) in &self.entries {
            f(*id, v.reborrow())
        }
    }
}

/// Two bags seen as one: `upper` (e.g. attribute-producing adapter outputs) shadows `lower`
/// (the ingested attributes). Nothing is copied.
#[derive(Clone, Copy)]
pub struct LayeredBag<'u, 'l> {
    upper: &'u dyn Bag,
    lower: &'l dyn Bag,
}

impl std::fmt::Debug for LayeredBag<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        self.for_each(&mut |id, v| {
            m.entry(&id, &v);
        });
        m.finish()
    }
}

impl<'u, 'l> LayeredBag<'u, 'l> {
    /// `upper` over `lower`.
    pub fn new(upper: &'u dyn Bag, lower: &'l dyn Bag) -> Self {
        LayeredBag { upper, lower }
    }
}

impl Bag for LayeredBag<'_, '_> {
    #[inline]
    fn get(&self, id: AttrId) -> Option<Value<'_>> {
        self.upper.get(id).or_else(|| self.lower.get(id))
    }
    #[inline]
    fn get_stored(&self, id: AttrId) -> Option<Option<&Value<'_>>> {
        match self.upper.get_stored(id)? {
            Some(v) => Some(Some(v)),
            None => self.lower.get_stored(id),
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(AttrId, Value<'_>)) {
        self.upper.for_each(f);
        let upper = self.upper;
        self.lower.for_each(&mut |id, v| {
            if upper.get(id).is_none() {
                f(id, v)
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::well_known as wk;

    #[test]
    fn set_get_replace_remove() {
        let host_path = String::from("/api");
        let mut bag = Attributes::new();
        bag.set(wk::REQUEST_PATH, Value::str(&host_path));
        bag.set(wk::RESPONSE_CODE, Value::Int64(200));
        bag.set(wk::RESPONSE_CODE, Value::Int64(404));
        assert_eq!(bag.len(), 2);
        assert_eq!(bag.get(wk::RESPONSE_CODE), Some(Value::Int64(404)));
        assert_eq!(bag.get(wk::REQUEST_PATH), Some(Value::str("/api")));
        assert_eq!(bag.get(wk::SOURCE_IP), None);
        assert_eq!(
            bag.get_stored(wk::RESPONSE_CODE),
            Some(Some(&Value::Int64(404)))
        );
        assert_eq!(bag.get_stored(wk::SOURCE_IP), Some(None));
        assert_eq!(bag.remove(wk::REQUEST_PATH), Some(Value::str("/api")));
        assert_eq!(bag.get(wk::REQUEST_PATH), None);
        let owned = bag.clone().into_owned();
        assert_eq!(owned, bag);
    }

    #[test]
    fn layered_bag_shadows_without_copying() {
        let lower = Attributes::new()
            .with(wk::SOURCE_NAME, Value::str("a"))
            .with(wk::SOURCE_NAMESPACE, Value::str("ns"));
        let upper = Attributes::new().with(wk::SOURCE_NAME, Value::str("b"));
        let both = LayeredBag::new(&upper, &lower);
        assert_eq!(both.get(wk::SOURCE_NAME), Some(Value::str("b")));
        assert_eq!(both.get(wk::SOURCE_NAMESPACE), Some(Value::str("ns")));
        assert_eq!(
            both.get_stored(wk::SOURCE_NAME),
            Some(Some(&Value::str("b")))
        );
        assert_eq!(
            both.get_stored(wk::SOURCE_NAMESPACE),
            Some(Some(&Value::str("ns")))
        );
        assert_eq!(both.get_stored(wk::SOURCE_IP), Some(None));
        let mut seen = Vec::new();
        both.for_each(&mut |id, v| seen.push((id, v.to_string())));
        assert_eq!(
            seen,
            vec![
                (wk::SOURCE_NAME, "b".to_string()),
                (wk::SOURCE_NAMESPACE, "ns".to_string())
            ]
        );
        assert_eq!(Attributes::copy_of(&both).len(), 2);
    }
}
