//! The flow hash: stable across nodes, builds and architectures.
//!
//! **herd-hash v1.** A key is serialised into bytes and hashed with XXH3-64
//! (the frozen XXH3 specification, via `xxhash-rust`; IPv6 keys by
//! `xxh3_17to32`, the same function computed in registers) with the seed
//! [`HASH_SEED`]; the bucket is the hash mapped onto `0..n_buckets` by a
//! multiply-shift (`(hash * n) >> 64` in 128-bit arithmetic), which is exact
//! for any bucket count, not only powers of two.
//!
//! Key bytes, all integers big-endian:
//!
//! | affinity         | IPv4 client                  | IPv6 client                   |
//! |------------------|------------------------------|-------------------------------|
//! | `client-ip`      | `0x04, a0..a3`  (5 bytes)    | `0x06, a0..a15`  (17 bytes)   |
//! | `client-ip-port` | `0x04, a0..a3, port` (7)     | `0x06, a0..a15, port` (19)    |
//!
//! `port` is the client's (source) TCP/UDP port. The VIP and the destination
//! port are not part of the key, so one client keeps one server across all
//! `client-ip` rules of a farm. Test vectors are at the end of this file; a
//! change to any of them is a change of the wire contract between nodes.

use std::net::IpAddr;

/// Seed of herd-hash v1 ("Herd" in ASCII).
pub const HASH_SEED: u64 = 0x4865_7264;

/// The client identity a bucket is chosen by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowKey {
    V4 { client: [u8; 4], port: Option<u16> },
    V6 { client: [u8; 16], port: Option<u16> },
}

impl FlowKey {
    pub fn new(client: IpAddr, port: Option<u16>) -> Self {
        match client {
            IpAddr::V4(a) => FlowKey::V4 {
                client: a.octets(),
                port,
            },
            IpAddr::V6(a) => FlowKey::V6 {
                client: a.octets(),
                port,
            },
        }
    }

    /// herd-hash v1 of this key.
    // Always inlined: at the fast path's call the variant is known and
    // the other arm folds away; as a call, the bitset load after it waits
    // for the return (measured: the call was 9-11 % of the lcore).
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        match *self {
            FlowKey::V4 { client, port } => {
                // The key bytes are assembled in one register and stored as
                // one word: XXH3 reads them back as words, and a store of
                // single bytes would stall that load (store forwarding).
                let mut word = 4u64 | u64::from(u32::from_le_bytes(client)) << 8;
                let len = match port {
                    Some(p) => {
                        word |= u64::from(u16::from_le_bytes(p.to_be_bytes())) << 40;
                        7
                    }
                    None => 5,
                };
                // The first and the last four bytes, as XXH3 reads them.
                let first = word as u32;
                let last = (word >> ((len - 4) * 8)) as u32;
                xxh3_4to8(len as u64, first, last, HASH_SEED)
            }
            FlowKey::V6 { client, port } => {
                // The key bytes `6, a0..a15[, port]` as XXH3 reads them:
                // words at offsets 0, 8, len-16 and len-8.
                let a = u128::from_le_bytes(client);
                let (w0, w1) = (6 | (a as u64) << 8, (a >> 56) as u64);
                match port {
                    Some(p) => {
                        let [hi, lo] = p.to_be_bytes();
                        let tail = (a >> 80) as u64 | u64::from(hi) << 48 | u64::from(lo) << 56;
                        xxh3_17to32(19, [w0, w1, (a >> 16) as u64, tail], HASH_SEED)
                    }
                    None => xxh3_17to32(17, [w0, w1, a as u64, (a >> 64) as u64], HASH_SEED),
                }
            }
        }
    }

    /// The bucket of this key among `n_buckets` (which must be > 0).
    #[inline]
    pub fn bucket(&self, n_buckets: u32) -> u32 {
        bucket_of(self.hash(), n_buckets)
    }
}

/// XXH3-64 (seeded, default secret) of a 4- to 8-byte input, from the
/// little-endian words the specification reads of it (its first and its
/// last four bytes): its 4-to-8-byte path, in registers.
///
/// Why by hand: the library's call dispatches on the length and reads the
/// key back from memory; on the lcore this is the per-packet hash of
/// every IPv4 frame, and the bucket's bitset load waits for it. Tested
/// equal to the library.
#[inline]
fn xxh3_4to8(len: u64, first: u32, last: u32, seed: u64) -> u64 {
    // Bytes 8..24 of XXH3's default secret, as little-endian words.
    const SECRET_8: u64 = 0x1cad_21f7_2c81_017c;
    const SECRET_16: u64 = 0xdb97_9083_e96d_d4de;
    const RRMXMX: u64 = 0x9FB2_1C65_1E98_DF25;
    let seed = seed ^ (u64::from((seed as u32).swap_bytes()) << 32);
    let bitflip = (SECRET_8 ^ SECRET_16).wrapping_sub(seed);
    let mut h = (u64::from(last) | u64::from(first) << 32) ^ bitflip;
    // XXH3's rrmxmx.
    h ^= h.rotate_left(49) ^ h.rotate_left(24);
    h = h.wrapping_mul(RRMXMX);
    h ^= (h >> 35).wrapping_add(len);
    h = h.wrapping_mul(RRMXMX);
    h ^ (h >> 28)
}

/// XXH3-64 (seeded, default secret) of a 17- to 32-byte input, from the
/// four little-endian words the specification reads of it (at offsets 0,
/// 8, len-16 and len-8): its 17-to-128-byte path, in registers.
///
/// Why by hand: the library hashes a slice, and an IPv6 key written to
/// memory byte by byte is read back as words that straddle those stores,
/// so every read waits for them (a store-forwarding stall): about a fifth
/// of the lcore's time on IPv6 traffic. Tested equal to the library.
#[inline]
fn xxh3_17to32(len: u64, words: [u64; 4], seed: u64) -> u64 {
    const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
    // The first 32 bytes of XXH3's default secret, as little-endian words.
    const SECRET: [u64; 4] = [
        0xbe4b_a423_396c_feb8,
        0x1cad_21f7_2c81_017c,
        0xdb97_9083_e96d_d4de,
        0x1f67_b3b7_a4a4_4072,
    ];
    let mix16 = |lo: u64, hi: u64, s_lo: u64, s_hi: u64| {
        let p = u128::from(lo ^ s_lo.wrapping_add(seed)) * u128::from(hi ^ s_hi.wrapping_sub(seed));
        (p as u64) ^ ((p >> 64) as u64)
    };
    let mut h = len
        .wrapping_mul(PRIME64_1)
        .wrapping_add(mix16(words[0], words[1], SECRET[0], SECRET[1]))
        .wrapping_add(mix16(words[2], words[3], SECRET[2], SECRET[3]));
    // XXH3's avalanche.
    h ^= h >> 37;
    h = h.wrapping_mul(0x1656_6791_9E37_79F9);
    h ^ (h >> 32)
}

/// Maps a hash onto `0..n_buckets` (Lemire's multiply-shift).
#[inline]
pub fn bucket_of(hash: u64, n_buckets: u32) -> u32 {
    ((hash as u128 * n_buckets as u128) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// herd-hash v1 test vectors: (client, port, hash, bucket of 4096),
    /// computed independently with Python's `xxhash` package.
    /// Every node of a farm must compute exactly these.
    #[test]
    fn test_vectors() {
        let vectors: [(IpAddr, Option<u16>, u64, u32); 6] = [
            (
                Ipv4Addr::new(198, 19, 0, 1).into(),
                None,
                0xee9f4061fc891997,
                3817,
            ),
            (
                Ipv4Addr::new(198, 19, 0, 1).into(),
                Some(40000),
                0x1b6d8f354330a9e6,
                438,
            ),
            (
                Ipv4Addr::new(198, 19, 255, 254).into(),
                None,
                0x773d3d7f91d96f4a,
                1907,
            ),
            (
                Ipv4Addr::new(0, 0, 0, 0).into(),
                Some(0),
                0x72cdcf2814a0a653,
                1836,
            ),
            (
                "2001:2:1::1".parse::<Ipv6Addr>().unwrap().into(),
                None,
                0xbef39dd61090f05a,
                3055,
            ),
            (
                "2001:2:1::1".parse::<Ipv6Addr>().unwrap().into(),
                Some(443),
                0x3d0f8a90b718ac50,
                976,
            ),
        ];
        for (client, port, hash, bucket) in vectors {
            let key = FlowKey::new(client, port);
            assert_eq!(key.hash(), hash, "hash of {client} port {port:?}");
            assert_eq!(key.bucket(4096), bucket, "bucket of {client} port {port:?}");
        }
    }

    /// XXH3 (the library) over a key's bytes: `tag`, the client, the port.
    fn xxh3_of_key(tag: u8, client: &[u8], port: Option<u16>) -> u64 {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(client);
        if let Some(p) = port {
            bytes.extend_from_slice(&p.to_be_bytes());
        }
        xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, HASH_SEED)
    }

    proptest::proptest! {
        /// The IPv4 key hashed in registers equals XXH3 over its bytes.
        #[test]
        fn ipv4_keys_hash_as_xxh3_of_their_bytes(client in proptest::prelude::any::<[u8; 4]>(), port in proptest::option::of(proptest::prelude::any::<u16>())) {
            let expected = xxh3_of_key(4, &client, port);
            proptest::prop_assert_eq!(FlowKey::V4 { client, port }.hash(), expected);
        }

        /// The IPv6 key hashed in registers equals XXH3 over its bytes.
        #[test]
        fn ipv6_keys_hash_as_xxh3_of_their_bytes(client in proptest::prelude::any::<[u8; 16]>(), port in proptest::option::of(proptest::prelude::any::<u16>())) {
            let expected = xxh3_of_key(6, &client, port);
            proptest::prop_assert_eq!(FlowKey::V6 { client, port }.hash(), expected);
        }
    }

    #[test]
    fn bucket_of_covers_the_range_and_never_overflows() {
        assert_eq!(bucket_of(0, 4096), 0);
        assert_eq!(bucket_of(u64::MAX, 4096), 4095);
        assert_eq!(bucket_of(u64::MAX, 1), 0);
        assert_eq!(bucket_of(u64::MAX / 2, 1000), 499);
    }

    #[test]
    fn port_changes_the_key_and_family_is_part_of_it() {
        let a = FlowKey::new(Ipv4Addr::new(198, 19, 0, 1).into(), Some(1));
        let b = FlowKey::new(Ipv4Addr::new(198, 19, 0, 1).into(), Some(2));
        assert_ne!(a.hash(), b.hash());
        // An IPv4 address and the IPv6 address with the same leading bytes differ.
        let v4 = FlowKey::V4 {
            client: [1, 2, 3, 4],
            port: None,
        };
        let mut v6b = [0u8; 16];
        v6b[..4].copy_from_slice(&[1, 2, 3, 4]);
        let v6 = FlowKey::V6 {
            client: v6b,
            port: None,
        };
        assert_ne!(v4.hash(), v6.hash());
    }

    #[test]
    fn buckets_spread_evenly() {
        let n = 64u32;
        let mut counts = vec![0u32; n as usize];
        for i in 0..65536u32 {
            let ip = Ipv4Addr::from(0xC613_0000 | i); // 198.19.0.0/16
            counts[FlowKey::new(ip.into(), None).bucket(n) as usize] += 1;
        }
        let ideal = 65536 / n;
        for c in counts {
            assert!(
                c.abs_diff(ideal) < ideal / 5,
                "bucket count {c} vs ideal {ideal}"
            );
        }
    }
}
