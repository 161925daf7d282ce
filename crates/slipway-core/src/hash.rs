//! The hash behind the tables the data path looks up on every frame: the switch's MAC table,
//! the flow tables and the neighbour cache.
//!
//! Theory of operation: std's default, SipHash-1-3, is built to resist an attacker who sees
//! hash values; it costs tens of nanoseconds for a flow key, paid two or three times per frame.
//! These keys come from guests, so they are untrusted, but no guest ever sees a hash value:
//! what it needs to flood one bucket is the seed. Each table therefore gets its own random seed
//! (drawn from std's `RandomState`, which the OS seeds), and every 8-byte word of the key is
//! mixed in with a keyed folded multiply (the 128-bit product of two 64-bit words, its halves
//! XORed), the construction fast non-cryptographic hashers such as foldhash use.
//!
//! Limits: this is not a MAC. A guest that could time lookups over very many probes might learn
//! enough to build collisions; the tables are bounded (flow limits), so the worst case is slower
//! lookups for that guest's own flows, not unbounded memory.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A `HashMap` seeded and hashed with [`FastState`].
pub type FastMap<K, V> = HashMap<K, V, FastState>;

/// An empty [`FastMap`] with room for `n` entries.
pub fn fast_map_with_capacity<K, V>(n: usize) -> FastMap<K, V> {
    HashMap::with_capacity_and_hasher(n, FastState::default())
}

const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// Random per-table seeds; see the module notes.
#[derive(Clone, Debug)]
pub struct FastState {
    start: u64,
    key: u64,
}

impl Default for FastState {
    fn default() -> Self {
        let random = RandomState::new();
        let start = random.hash_one(0x0073_6c69_7077_6179_u64);
        let key = random.hash_one(start) | 1;
        FastState { start, key }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            acc: self.start,
            key: self.key,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FastHasher {
    acc: u64,
    key: u64,
}

#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl FastHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.acc = folded_multiply(self.acc ^ word, self.key ^ SPREAD).rotate_left(23);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8-byte chunk")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.mix(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 60));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.acc, self.key.rotate_left(32) ^ SPREAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::Hash;

    fn hash_of<T: Hash>(state: &FastState, v: &T) -> u64 {
        state.hash_one(v)
    }

    #[test]
    fn equal_keys_hash_equal_and_tables_differ_in_seed() {
        let a = FastState::default();
        let b = FastState::default();
        let key = ([10u8, 0, 2, 15], 40000u16, [127u8, 0, 0, 1], 80u16);
        assert_eq!(hash_of(&a, &key), hash_of(&a.clone(), &key));
        assert_ne!(hash_of(&a, &key), hash_of(&b, &key));
    }

    #[test]
    fn sequential_ports_spread_over_buckets_and_tag_bits() {
        // hashbrown takes the bucket from the low bits and a tag from the top 7: both must
        // vary when only a port changes.
        let s = FastState::default();
        let mut low = HashSet::new();
        let mut top = HashSet::new();
        for port in 0..4096u16 {
            let h = hash_of(&s, &([192u8, 168, 127, 2], port));
            low.insert(h & 0xfff);
            top.insert(h >> 57);
        }
        assert!(
            low.len() > 2400,
            "only {} of 4096 low-bit buckets used",
            low.len()
        );
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn trailing_zero_bytes_change_the_hash() {
        let s = FastState::default();
        let mut h1 = s.build_hasher();
        h1.write(b"ab");
        let mut h2 = s.build_hasher();
        h2.write(b"ab\0");
        assert_ne!(h1.finish(), h2.finish());
    }

    #[test]
    fn a_map_works_with_it() {
        let mut m: FastMap<u32, u32> = fast_map_with_capacity(4);
        for i in 0..10_000 {
            m.insert(i, i * 2);
        }
        assert!((0..10_000).all(|i| m[&i] == i * 2));
    }
}
