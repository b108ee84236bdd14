//! The heartbeat message: a versioned binary format, authenticated with
//! HMAC-SHA256 under the farm's shared key.
//!
//! ```text
//! offset  size  field
//!  0       4    magic "HRD1"
//!  4       1    version (1)
//!  5       1    kind (1 = heartbeat)
//!  6       2    sender node id
//!  8       8    incarnation (grows at every start of the sender)
//! 16       8    sequence (grows at every message of an incarnation)
//! 24       8    view: bitmap of the nodes the sender holds alive and
//!               ready, by index in the farm's sorted node list
//! 32       4    weight
//! 36       1    flags: bit 0 ready (owns buckets), bits 1-2 the
//!               node state (0 STOP, 1 WAIT, 2 UP), bit 3 transient
//!               (scripts running)
//! 37       8    ack incarnation: the recipient's incarnation…
//! 45       8    ack sequence: …and the highest sequence of it the sender
//!               has heard (0, 0 if none): a heartbeat is addressed to one
//!               peer, and this says the sender's view is newer than the
//!               recipient's last announcement
//! 53      32    HMAC-SHA256 over bytes 0..53
//! ```
//! All integers big-endian; 85 bytes in all. Version 2 (version 1 had no
//! ack; the two do not interoperate).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MAGIC: &[u8; 4] = b"HRD1";
pub const VERSION: u8 = 2;
pub const KIND_HEARTBEAT: u8 = 1;
const BODY: usize = 53;
pub const LEN: usize = BODY + 32;

type HmacSha256 = Hmac<Sha256>;

/// A heartbeat, decoded and authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub sender: u16,
    pub incarnation: u64,
    pub sequence: u64,
    pub view: u64,
    pub weight: u32,
    pub ready: bool,
    /// The sender's node state: [`STATE_STOP`], [`STATE_WAIT`] or
    /// [`STATE_UP`].
    pub state: u8,
    /// Whether the sender is running scripts.
    pub transient: bool,
    /// The recipient's (incarnation, sequence) the sender heard last.
    pub ack: (u64, u64),
}

pub const STATE_STOP: u8 = 0;
pub const STATE_WAIT: u8 = 1;
pub const STATE_UP: u8 = 2;

/// Why a datagram was dropped; each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("wrong length")]
    Length,
    #[error("not a Herd message")]
    Magic,
    #[error("unsupported version or kind")]
    Version,
    #[error("authentication failed")]
    Auth,
    #[error("a field holds an undefined value")]
    Field,
}

/// The farm's shared key.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// At least 16 bytes, as a key file should hold.
    pub fn new(bytes: &[u8]) -> Option<Key> {
        (bytes.len() >= 16).then(|| Key(bytes.to_vec()))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl Heartbeat {
    pub fn encode(&self, key: &Key) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[0..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        out[5] = KIND_HEARTBEAT;
        out[6..8].copy_from_slice(&self.sender.to_be_bytes());
        out[8..16].copy_from_slice(&self.incarnation.to_be_bytes());
        out[16..24].copy_from_slice(&self.sequence.to_be_bytes());
        out[24..32].copy_from_slice(&self.view.to_be_bytes());
        out[32..36].copy_from_slice(&self.weight.to_be_bytes());
        out[36] = u8::from(self.ready) | (self.state & 3) << 1 | u8::from(self.transient) << 3;
        out[37..45].copy_from_slice(&self.ack.0.to_be_bytes());
        out[45..53].copy_from_slice(&self.ack.1.to_be_bytes());
        let mut mac = key.mac();
        mac.update(&out[..BODY]);
        out[BODY..].copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Checks and decodes; nothing of an unauthenticated datagram is used.
    pub fn decode(bytes: &[u8], key: &Key) -> Result<Heartbeat, DecodeError> {
        if bytes.len() != LEN {
            return Err(DecodeError::Length);
        }
        if &bytes[0..4] != MAGIC {
            return Err(DecodeError::Magic);
        }
        if bytes[4] != VERSION || bytes[5] != KIND_HEARTBEAT {
            return Err(DecodeError::Version);
        }
        let mut mac = key.mac();
        mac.update(&bytes[..BODY]);
        mac.verify_slice(&bytes[BODY..])
            .map_err(|_| DecodeError::Auth)?;
        let flags = bytes[36];
        let state = (flags >> 1) & 3;
        if state > STATE_UP || flags >> 4 != 0 {
            return Err(DecodeError::Field);
        }
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Ok(Heartbeat {
            sender: u16::from_be_bytes([bytes[6], bytes[7]]),
            incarnation: u64_at(8),
            sequence: u64_at(16),
            view: u64_at(24),
            weight: u32::from_be_bytes(bytes[32..36].try_into().expect("4 bytes")),
            ready: flags & 1 == 1,
            state,
            transient: flags & 8 != 0,
            ack: (u64_at(37), u64_at(45)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef-farm-key").unwrap()
    }

    fn hb() -> Heartbeat {
        Heartbeat {
            sender: 3,
            incarnation: 7,
            sequence: 42,
            view: 0b1011,
            weight: 2,
            ready: true,
            state: STATE_UP,
            transient: false,
            ack: (5, 40),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = hb().encode(&key());
        assert_eq!(bytes.len(), LEN);
        assert_eq!(Heartbeat::decode(&bytes, &key()), Ok(hb()));
    }

    #[test]
    fn any_flipped_bit_or_other_key_fails_authentication() {
        let bytes = hb().encode(&key());
        for i in 6..LEN {
            let mut b = bytes;
            b[i] ^= 0x01;
            assert_eq!(
                Heartbeat::decode(&b, &key()),
                Err(DecodeError::Auth),
                "byte {i}"
            );
        }
        let other = Key::new(b"another key of the farm!").unwrap();
        assert_eq!(Heartbeat::decode(&bytes, &other), Err(DecodeError::Auth));
    }

    #[test]
    fn bad_framing_is_named() {
        let bytes = hb().encode(&key());
        assert_eq!(
            Heartbeat::decode(&bytes[..LEN - 1], &key()),
            Err(DecodeError::Length)
        );
        let mut b = bytes;
        b[0] = b'X';
        assert_eq!(Heartbeat::decode(&b, &key()), Err(DecodeError::Magic));
        let mut b = bytes;
        b[4] = 1;
        assert_eq!(Heartbeat::decode(&b, &key()), Err(DecodeError::Version));
        assert!(Key::new(b"short").is_none());
    }

    #[test]
    fn state_and_transient_round_trip_and_undefined_flags_are_refused() {
        for state in [STATE_STOP, STATE_WAIT, STATE_UP] {
            for transient in [false, true] {
                let h = Heartbeat {
                    state,
                    transient,
                    ready: state == STATE_UP && !transient,
                    ..hb()
                };
                assert_eq!(Heartbeat::decode(&h.encode(&key()), &key()), Ok(h));
            }
        }
        // A correctly signed message with an undefined state or flag bit.
        for flags in [0b0110u8, 0b1_0000] {
            let mut b = hb().encode(&key());
            b[36] = flags;
            let mut mac = key().mac();
            mac.update(&b[..BODY]);
            b[BODY..].copy_from_slice(&mac.finalize().into_bytes());
            assert_eq!(Heartbeat::decode(&b, &key()), Err(DecodeError::Field));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let _ = Heartbeat::decode(&b, &key());
        }
    }
}
