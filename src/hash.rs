//! FNV-1a (64 bit), the one non-cryptographic hash of the code base (Fowler/Noll/Vo,
//! draft-eastlake-fnv). It spreads per-recipient jitter and retry backoff deterministically:
//! the same key gives the same value on every start, every instance and every platform.
//! Not for anything an attacker may choose to collide (use SHA-256 there, as Message-IDs do).

/// FNV-1a 64-bit state; feed bytes (or `write!` text) and read `.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a(pub u64);

/// The FNV-1a 64-bit offset basis.
const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// The FNV 64-bit prime.
const PRIME: u64 = 0x0000_0100_0000_01b3;

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(OFFSET_BASIS)
    }
}

impl Fnv1a {
    /// A state seeded with `seed` XOR the offset basis (backoff mixes in the attempt number).
    pub fn seeded(seed: u64) -> Fnv1a {
        Fnv1a(seed ^ OFFSET_BASIS)
    }

    /// Feeds bytes in order.
    pub fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(PRIME);
        }
    }

    /// The hash of `bytes` alone.
    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Fnv1a::default();
        h.feed(bytes);
        h.0
    }
}

impl std::fmt::Write for Fnv1a {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.feed(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of FNV-1a 64 (Fowler/Noll/Vo reference).
        assert_eq!(Fnv1a::of(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv1a::of(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fnv1a::of(b"foobar"), 0x8594_4171_f739_67e8);
        let mut h = Fnv1a::default();
        std::fmt::Write::write_str(&mut h, "foo").unwrap();
        h.feed(b"bar");
        assert_eq!(h.0, Fnv1a::of(b"foobar"), "fed in pieces: the same value");
    }
}
