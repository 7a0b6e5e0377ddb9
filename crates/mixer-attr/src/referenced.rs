//! Which attributes an evaluation looked at: present ones, absent ones and map keys.
//!
//! The check cache keys on exactly this record: a cached decision is reused only for a request
//! whose referenced attributes hold the same values (and whose absent ones are still absent).

use crate::vocabulary::{AttrId, Vocabulary};

/// Receives the attribute look-ups made during an evaluation.
///
/// `()` ignores them at no cost; [`ReferencedAttributes`] keeps them.
pub trait ReferenceRecorder {
    /// `id` was looked up and was `present` (or absent).
    fn attribute(&mut self, id: AttrId, present: bool);
    /// Key `key` of the map attribute `id` was looked up and was `present` (or absent).
    fn map_key(&mut self, id: AttrId, key: &str, present: bool);
}

impl ReferenceRecorder for () {
    #[inline(always)]
    fn attribute(&mut self, _: AttrId, _: bool) {}
    #[inline(always)]
    fn map_key(&mut self, _: AttrId, _: &str, _: bool) {}
}

/// Whether a referenced attribute (or map key) was present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Presence {
    /// Present: a cached result holds only while the value is the same (Mixer's EXACT).
    Exact,
    /// Absent: a cached result holds only while it stays absent (Mixer's ABSENCE).
    Absent,
}

/// One referenced attribute or map key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    pub attr: AttrId,
    /// The map key, for a map-key reference.
    pub map_key: Option<Box<str>>,
    pub presence: Presence,
}

impl Reference {
    /// The DESIGN section 9 text form: `x`, `-x`, `m[k]`, `-m[k]`.
    pub fn display(&self, vocab: &Vocabulary) -> String {
        let sign = if self.presence == Presence::Absent {
            "-"
        } else {
            ""
        };
        match &self.map_key {
            Some(k) => format!("{sign}{}[{k}]", vocab.name(self.attr)),
            None => format!("{sign}{}", vocab.name(self.attr)),
        }
    }
}

/// A de-duplicated, order-preserving record of references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferencedAttributes {
    refs: Vec<Reference>,
    /// Whole-attribute references already recorded, two bits per id (present, absent) for the
    /// first 128 ids: de-duplication without scanning `refs` on the request path.
    seen: [u64; 4],
}

impl ReferencedAttributes {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// The references, in first-seen order.
    pub fn iter(&self) -> impl Iterator<Item = &Reference> {
        self.refs.iter()
    }

    /// Number of distinct references.
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    /// True when nothing was referenced.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// Forgets everything, keeping the allocation.
    pub fn clear(&mut self) {
        self.refs.clear();
        self.seen = [0; 4];
    }

    /// Adds every reference of `other`.
    pub fn merge(&mut self, other: &ReferencedAttributes) {
        for r in &other.refs {
            self.push(r.clone());
        }
    }

    /// The references sorted into a canonical order (for cache keys and comparisons).
    pub fn sorted(&self) -> Vec<Reference> {
        let mut v = self.refs.clone();
        v.sort();
        v
    }

    /// The text form of every reference (DESIGN section 9).
    pub fn to_strings(&self, vocab: &Vocabulary) -> Vec<String> {
        self.refs.iter().map(|r| r.display(vocab)).collect()
    }

    fn push(&mut self, r: Reference) {
        match r.map_key {
            None => self.attribute(r.attr, r.presence == Presence::Exact),
            Some(_) => {
                if !self.refs.contains(&r) {
                    self.refs.push(r);
                }
            }
        }
    }

    /// The bit of `id` with `presence`, when `id` is small enough to have one.
    fn bit(id: AttrId, presence: Presence) -> Option<(usize, u64)> {
        let n = id.index().checked_mul(2)? + usize::from(presence == Presence::Absent);
        (n < 256).then(|| (n / 64, 1u64 << (n % 64)))
    }
}

fn presence(present: bool) -> Presence {
    if present {
        Presence::Exact
    } else {
        Presence::Absent
    }
}

impl ReferenceRecorder for ReferencedAttributes {
    #[inline]
    fn attribute(&mut self, id: AttrId, present: bool) {
        let presence = presence(present);
        let known = match Self::bit(id, presence) {
            Some((word, mask)) => {
                let known = self.seen[word] & mask != 0;
                self.seen[word] |= mask;
                known
            }
            None => self
                .refs
                .iter()
                .any(|r| r.attr == id && r.map_key.is_none() && r.presence == presence),
        };
        if !known {
            self.refs.push(Reference {
                attr: id,
                map_key: None,
                presence,
            });
        }
    }
    fn map_key(&mut self, id: AttrId, key: &str, present: bool) {
        let presence = presence(present);
        if !self
            .refs
            .iter()
            .any(|r| r.attr == id && r.map_key.as_deref() == Some(key) && r.presence == presence)
        {
            self.refs.push(Reference {
                attr: id,
                map_key: Some(key.into()),
                presence,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::well_known as wk;

    #[test]
    fn records_dedup_and_print() {
        let vocab = Vocabulary::istio();
        let mut r = ReferencedAttributes::new();
        r.attribute(wk::SOURCE_IP, true);
        r.attribute(wk::SOURCE_IP, true);
        r.attribute(wk::DESTINATION_IP, false);
        r.map_key(wk::REQUEST_HEADERS, "user-agent", true);
        r.map_key(wk::REQUEST_HEADERS, "x-b3", false);
        assert_eq!(
            r.to_strings(&vocab),
            [
                "source.ip",
                "-destination.ip",
                "request.headers[user-agent]",
                "-request.headers[x-b3]"
            ]
        );
        let mut other = ReferencedAttributes::new();
        other.attribute(wk::SOURCE_IP, true);
        other.attribute(wk::REQUEST_PATH, true);
        r.merge(&other);
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn large_ids_dedup_too() {
        let mut r = ReferencedAttributes::new();
        for _ in 0..3 {
            r.attribute(AttrId(500), true);
            r.attribute(AttrId(500), false);
            r.attribute(AttrId(127), false);
        }
        assert_eq!(r.len(), 3);
        r.clear();
        r.attribute(AttrId(127), false);
        assert_eq!(r.len(), 1);
    }
}
