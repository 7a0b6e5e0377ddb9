//! Byte-string map keys hashed once: the hash chooses the shard and is reused by the shard's
//! map (no second pass over the key), and look-ups borrow the caller's bytes (no allocation).
//! Equality always compares the full bytes.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};

/// The seed of every key hash (fixed: hashes are stable within the process).
const SEED: u64 = 0x6d69_7865_7232;

/// The hash of `bytes` (fixed seed: stable within the process).
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(SEED).hash_one(bytes)
}

/// The shard of a hash (its high bits; the map inside the shard uses the low ones). Shard
/// counts are powers of two in practice, which takes a mask instead of a division.
#[inline]
pub(crate) fn shard_index(hash: u64, shards: usize) -> usize {
    let high = (hash >> 32) as usize;
    if shards.is_power_of_two() {
        high & (shards - 1)
    } else {
        high % shards.max(1)
    }
}

/// A stored key: its bytes and their hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HashedKey {
    hash: u64,
    bytes: Box<[u8]>,
}

impl HashedKey {
    pub(crate) fn new(hash: u64, bytes: &[u8]) -> Self {
        HashedKey {
            hash,
            bytes: bytes.into(),
        }
    }
}

/// What stored keys and borrowed probes have in common.
pub(crate) trait KeyView {
    fn key_hash(&self) -> u64;
    fn key_bytes(&self) -> &[u8];
}

impl KeyView for HashedKey {
    fn key_hash(&self) -> u64 {
        self.hash
    }
    fn key_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A look-up key borrowing the caller's bytes.
pub(crate) struct Probe<'b> {
    pub hash: u64,
    pub bytes: &'b [u8],
}

impl KeyView for Probe<'_> {
    fn key_hash(&self) -> u64 {
        self.hash
    }
    fn key_bytes(&self) -> &[u8] {
        self.bytes
    }
}

impl Hash for HashedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash)
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.key_hash())
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_hash() == other.key_hash() && self.key_bytes() == other.key_bytes()
    }
}

impl Eq for dyn KeyView + '_ {}

impl<'a> Borrow<dyn KeyView + 'a> for HashedKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

/// A hasher that passes a precomputed hash through (maps keyed by a hash, or by a key whose
/// `Hash` writes its precomputed hash).
#[derive(Default, Clone, Copy, Debug)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by the keys above; mix in anything else deterministically.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builds [`PassThrough`] hashers.
pub(crate) type PassThroughState = std::hash::BuildHasherDefault<PassThrough>;

/// A stored key whose bytes start with their own hash (8 bytes, little-endian): a map of these
/// is probed with a plain byte slice in the same form, with no dynamic dispatch, and compares
/// the hash before the rest of the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PrefixedKey(Box<[u8]>);

impl PrefixedKey {
    pub(crate) fn new(prefixed: &[u8]) -> Self {
        PrefixedKey(prefixed.into())
    }
}

impl Borrow<[u8]> for PrefixedKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl Hash for PrefixedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Exactly as the borrowed form hashes.
        self.0[..].hash(state)
    }
}

/// The hash of two byte strings read where they are (not from a buffer just written: wide
/// loads of freshly stored bytes stall). Stable within the process.
pub(crate) fn hash_pair(a: &[u8], b: &[u8]) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(SEED).build_hasher();
    h.write_usize(a.len());
    h.write(a);
    h.write(b);
    h.finish()
}

/// Hashes a [`PrefixedKey`] (or its byte slice) by reading the hash it starts with.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct PrefixHash(u64);

impl Hasher for PrefixHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        match bytes.first_chunk::<8>() {
            Some(head) => self.0 = u64::from_le_bytes(*head),
            // Not a prefixed key: mix it in deterministically.
            None => {
                for b in bytes {
                    self.0 = self.0.rotate_left(8) ^ u64::from(*b);
                }
            }
        }
    }
    fn write_usize(&mut self, _len: usize) {
        // The slice's length prefix: the hash in the bytes already covers the key.
    }
}

/// Builds [`PrefixHash`] hashers.
pub(crate) type PrefixHashState = std::hash::BuildHasherDefault<PrefixHash>;

#[cfg(test)]
mod tests {
    use super::*;
    use lru::LruCache;
    use std::num::NonZeroUsize;

    #[test]
    fn prefixed_keys_are_found_by_their_bytes_and_compared_whole() {
        let cap = NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN);
        let mut m: LruCache<PrefixedKey, u32, PrefixHashState> =
            LruCache::with_hasher(cap, PrefixHashState::default());
        let h = hash_pair(b"a", b"bc");
        let mut abc = *b"........abc";
        abc[..8].copy_from_slice(&h.to_le_bytes());
        m.put(PrefixedKey::new(&abc), 1);
        assert_eq!(m.get(&abc[..]), Some(&1));
        // Same hash, different bytes: a collision never matches.
        let mut forged = *b"........abd";
        forged[..8].copy_from_slice(&h.to_le_bytes());
        assert_eq!(m.get(&forged[..]), None);
    }

    #[test]
    fn probes_find_stored_keys_and_compare_full_bytes() {
        let cap = NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN);
        let mut m: LruCache<HashedKey, u32, PassThroughState> =
            LruCache::with_hasher(cap, PassThroughState::default());
        let h = hash_bytes(b"abc");
        m.put(HashedKey::new(h, b"abc"), 1);
        let probe = Probe {
            hash: h,
            bytes: b"abc",
        };
        assert_eq!(m.get(&probe as &dyn KeyView), Some(&1));
        // Same hash, different bytes: a collision never matches.
        let forged = Probe {
            hash: h,
            bytes: b"abd",
        };
        assert_eq!(m.get(&forged as &dyn KeyView), None);
    }
}
