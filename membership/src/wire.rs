//! The heartbeat message: a versioned binary format, authenticated with
//! HMAC-SHA256 under the farm's shared key.
//!
//! ```text
//! offset  size  field
//!  0       4    magic "HRD1"
//!  4       1    version (6; this message's layout)
//!  5       1    kind (1 = heartbeat)
//!  6       2    sender node id
//!  8       8    incarnation (grows at every start of the sender)
//! 16       8    sequence (grows at every message of an incarnation)
//! 24       8    view: bitmap of the nodes the sender holds alive and
//!               ready, by index in the farm's sorted node list
//! 32       4    weight (the sender's, as set at run time)
//! 36       1    flags: bit 0 ready (owns buckets), bits 1-2 the
//!               node state (0 STOP, 1 WAIT, 2 UP), bit 3 transient
//!               (scripts running)
//! 37       8    ack incarnation: the recipient's incarnation…
//! 45       8    ack sequence: …and the highest sequence of it the sender
//!               has heard (0, 0 if none): a heartbeat is addressed to one
//!               peer, and this says the sender's view is newer than the
//!               recipient's last announcement
//! 53       8    assignment digest: XXH3 of the view and its members'
//!               weights (two nodes agree only on the same assignment)
//! 61       8    farm digest: of what every node must share (VIPs, rules
//!               and affinities, bucket count, delivery, hash version);
//!               two nodes agree only on the same farm
//! 69       1    oldest protocol version the sender speaks   } since
//! 70       1    newest protocol version the sender speaks   } version 6
//! 71       …    moving out: the buckets whose old connections the sender
//!               still serves (a bucket set, below)
//!  …       …    kept in: the buckets the sender still takes the new flows
//!               of although its view gives them to another node, because
//!               their move to it has not ended (a bucket set)
//! end-32  32    HMAC-SHA256 over everything before it
//! ```
//! A bucket set: a tag, 0 none, 1 ranges, 2 bitmap, 3 every bucket the
//! sender's view does not give it; ranges: count (u16), then (first,
//! count) as u32 pairs; bitmap: bit count (u32), then the bits, bucket 0 in
//! the low bit of the first byte. The two sets share
//! [`MAX_MOVING_BYTES`]; one that does not fit is sent as tag 3.
//!
//! All integers big-endian; 105 bytes when nothing moves.
//!
//! # Versions
//!
//! A build speaks two versions: its own ([`VERSION`], 6) and the previous
//! one ([`OLDEST_VERSION`], 5: the same message without the two version
//! bytes), so a farm upgrades node by node. A heartbeat is addressed to one
//! peer and written in the newest version both speak; a version-5
//! heartbeat says its sender speaks 5 alone. (Version 4 had no farm
//! digest, 3 no kept-in set, 2 no digest and no moves: they are not
//! spoken.)

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MAGIC: &[u8; 4] = b"HRD1";
/// The newest protocol version this build speaks.
pub const VERSION: u8 = 6;
/// The oldest: the previous release's, for rolling upgrades.
pub const OLDEST_VERSION: u8 = 5;
pub const KIND_HEARTBEAT: u8 = 1;
/// The fixed part of version 5, and of version 6 (two version bytes more).
const FIXED_V5: usize = 69;
const FIXED: usize = FIXED_V5 + 2;
const MAC_LEN: usize = 32;
/// The length of a heartbeat that announces no move.
pub const MIN_LEN: usize = FIXED + 2 + MAC_LEN;
const MIN_LEN_V5: usize = FIXED_V5 + 2 + MAC_LEN;

fn fixed_len(version: u8) -> usize {
    if version >= 6 {
        FIXED
    } else {
        FIXED_V5
    }
}

/// The protocol versions a node speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    pub oldest: u8,
    pub newest: u8,
}

impl Versions {
    /// What this build speaks.
    pub const BUILD: Versions = Versions {
        oldest: OLDEST_VERSION,
        newest: VERSION,
    };

    /// This build's versions up to `newest` (a node held at the previous
    /// version during an upgrade); `None` if this build does not speak it.
    pub fn up_to(newest: u8) -> Option<Versions> {
        (OLDEST_VERSION..=VERSION)
            .contains(&newest)
            .then_some(Versions {
                oldest: OLDEST_VERSION,
                newest,
            })
    }

    pub fn speaks(&self, version: u8) -> bool {
        (self.oldest..=self.newest).contains(&version)
    }

    /// The newest version spoken by both, if any.
    pub fn common(&self, peer: Versions) -> Option<u8> {
        let v = self.newest.min(peer.newest);
        (v >= self.oldest.max(peer.oldest)).then_some(v)
    }
}

impl std::fmt::Display for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.oldest == self.newest {
            write!(f, "{}", self.newest)
        } else {
            write!(f, "{}-{}", self.oldest, self.newest)
        }
    }
}
/// Room kept for the two bucket sets: a heartbeat stays one UDP datagram
/// without IP fragments on an ordinary MTU.
pub const MAX_MOVING_BYTES: usize = 1400;
/// The highest bucket count a heartbeat describes.
pub const MAX_BUCKETS: u32 = 1 << 20;

type HmacSha256 = Hmac<Sha256>;

/// A set of buckets a heartbeat announces (moving out, kept in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketSet {
    /// As a bitset (`u64` words, bucket 0 in the low bit of word 0); empty
    /// when nothing moves.
    Buckets(Vec<u64>),
    /// Every bucket its view does not give it (when the set does not fit
    /// in a heartbeat).
    AllElse,
}

impl BucketSet {
    pub fn none() -> Self {
        BucketSet::Buckets(Vec::new())
    }

    pub fn contains(&self, b: u32) -> bool {
        match self {
            BucketSet::AllElse => true,
            BucketSet::Buckets(w) => w
                .get((b / 64) as usize)
                .is_some_and(|w| w & (1 << (b % 64)) != 0),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, BucketSet::Buckets(w) if w.iter().all(|w| *w == 0))
    }
}

/// A heartbeat, decoded and authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The version it is written in.
    pub version: u8,
    /// What its sender speaks (a version-5 heartbeat: 5 alone).
    pub speaks: Versions,
    pub sender: u16,
    pub incarnation: u64,
    pub sequence: u64,
    pub view: u64,
    pub weight: u32,
    pub ready: bool,
    /// The sender's node state (on the wire: [`state_byte`]).
    pub state: NodeState,
    /// Whether the sender is running scripts.
    pub transient: bool,
    /// The recipient's (incarnation, sequence) the sender heard last.
    pub ack: (u64, u64),
    /// The assignment the sender's view stands for (view and weights).
    pub digest: u64,
    /// What the sender's farm is made of (its config's VIPs, rules,
    /// buckets, delivery and hash version).
    pub farm: u64,
    /// The buckets whose old connections the sender still serves.
    pub moving_out: BucketSet,
    /// The buckets whose new flows the sender still takes although its
    /// view gives them to another node: their move to it has not ended.
    pub kept_in: BucketSet,
}

pub use node_state::NodeState;

/// A node state's two bits on the wire: 0 STOP, 1 WAIT, 2 UP. Written
/// out here, not taken from another numbering (the CLI's exit codes
/// happen to match): the protocol's values never change.
pub fn state_byte(state: NodeState) -> u8 {
    match state {
        NodeState::Stop => 0,
        NodeState::Wait => 1,
        NodeState::Up => 2,
    }
}

/// The node state of two wire bits; 3 is undefined.
pub fn state_of_byte(b: u8) -> Option<NodeState> {
    match b {
        0 => Some(NodeState::Stop),
        1 => Some(NodeState::Wait),
        2 => Some(NodeState::Up),
        _ => None,
    }
}

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
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

/// The keys a node holds: it sends with the first and accepts a heartbeat
/// authenticated with any (a key rotation: every node first accepts the
/// new key, then sends with it, then drops the old one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring(Vec<Key>);

impl Keyring {
    /// At least one key.
    pub fn new(keys: Vec<Key>) -> Option<Keyring> {
        (!keys.is_empty()).then_some(Keyring(keys))
    }

    pub fn sending(&self) -> &Key {
        &self.0[0]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Key> for Keyring {
    fn from(k: Key) -> Keyring {
        Keyring(vec![k])
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// At least [`config::MIN_KEY_BYTES`], as a key file holds.
    pub fn new(bytes: &[u8]) -> Option<Key> {
        (bytes.len() >= config::MIN_KEY_BYTES).then(|| Key(bytes.to_vec()))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

/// Runs of set bits: (first, count).
fn ranges(words: &[u64]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let mut w = *w;
        while w != 0 {
            let b = i as u32 * 64 + w.trailing_zeros();
            w &= w - 1;
            match out.last_mut() {
                Some((first, count)) if *first + *count == b => *count += 1,
                _ => out.push((b, 1)),
            }
        }
    }
    out
}

/// Appends a bucket set in at most `budget` bytes after its tag (as tag 3
/// if it does not fit); returns the bytes used after the tag.
fn encode_set(m: &BucketSet, budget: usize, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    encode_moving(m, budget, out);
    out.len() - start - 1
}

fn encode_moving(m: &BucketSet, budget: usize, out: &mut Vec<u8>) {
    let words = match m {
        BucketSet::AllElse => {
            out.push(3);
            return;
        }
        BucketSet::Buckets(w) => w,
    };
    let runs = ranges(words);
    if runs.is_empty() {
        out.push(0);
        return;
    }
    let nbits = (words.len() * 64) as u32;
    let bitmap_len = 4 + nbits.div_ceil(8) as usize;
    let ranges_len = 2 + 8 * runs.len();
    if ranges_len <= bitmap_len && ranges_len <= budget && runs.len() <= 0xffff {
        out.push(1);
        out.extend_from_slice(&(runs.len() as u16).to_be_bytes());
        for (first, count) in runs {
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
    } else if bitmap_len <= budget {
        out.push(2);
        out.extend_from_slice(&nbits.to_be_bytes());
        for i in 0..nbits.div_ceil(8) as usize {
            out.push((words[i / 8] >> ((i % 8) * 8)) as u8);
        }
    } else {
        out.push(3);
    }
}

/// Reads a bucket set at the start of `tail`; returns it and the bytes it
/// took.
fn decode_set(tail: &[u8]) -> Result<(BucketSet, usize), DecodeError> {
    let (&tag, rest) = tail.split_first().ok_or(DecodeError::Length)?;
    let be32 = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
    match tag {
        0 => Ok((BucketSet::none(), 1)),
        3 => Ok((BucketSet::AllElse, 1)),
        1 => {
            let n = rest.get(..2).ok_or(DecodeError::Length)?;
            let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
            let len = 2 + 8 * n;
            let body = rest.get(2..len).ok_or(DecodeError::Length)?;
            let mut words: Vec<u64> = Vec::new();
            for pair in body.chunks_exact(8) {
                let (first, count) = (be32(&pair[..4]), be32(&pair[4..]));
                let end = first.checked_add(count).ok_or(DecodeError::Field)?;
                if count == 0 || end > MAX_BUCKETS {
                    return Err(DecodeError::Field);
                }
                words.resize(words.len().max(end.div_ceil(64) as usize), 0);
                for b in first..end {
                    words[(b / 64) as usize] |= 1 << (b % 64);
                }
            }
            Ok((BucketSet::Buckets(words), 1 + len))
        }
        2 => {
            let nbits = be32(rest.get(..4).ok_or(DecodeError::Length)?);
            if nbits > MAX_BUCKETS {
                return Err(DecodeError::Field);
            }
            let len = 4 + nbits.div_ceil(8) as usize;
            let bytes = rest.get(4..len).ok_or(DecodeError::Length)?;
            let mut words = vec![0u64; nbits.div_ceil(64) as usize];
            for (i, byte) in bytes.iter().enumerate() {
                words[i / 8] |= u64::from(*byte) << ((i % 8) * 8);
            }
            Ok((BucketSet::Buckets(words), 1 + len))
        }
        _ => Err(DecodeError::Field),
    }
}

/// `body` followed by its HMAC under `key`: a datagram that passes
/// authentication whatever its body holds (what a sender writes; the fuzz
/// target of what follows authentication).
pub fn seal(mut body: Vec<u8>, key: &Key) -> Vec<u8> {
    let mut mac = key.mac();
    mac.update(&body);
    body.extend_from_slice(&mac.finalize().into_bytes());
    body
}

impl Heartbeat {
    /// Writes it in `self.version` (which this build must speak).
    pub fn encode(&self, keys: &Keyring) -> Vec<u8> {
        debug_assert!(Versions::BUILD.speaks(self.version));
        let key = keys.sending();
        let mut out = Vec::with_capacity(MIN_LEN);
        out.extend_from_slice(MAGIC);
        out.push(self.version);
        out.push(KIND_HEARTBEAT);
        out.extend_from_slice(&self.sender.to_be_bytes());
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.view.to_be_bytes());
        out.extend_from_slice(&self.weight.to_be_bytes());
        out.push(
            u8::from(self.ready) | state_byte(self.state) << 1 | u8::from(self.transient) << 3,
        );
        out.extend_from_slice(&self.ack.0.to_be_bytes());
        out.extend_from_slice(&self.ack.1.to_be_bytes());
        out.extend_from_slice(&self.digest.to_be_bytes());
        out.extend_from_slice(&self.farm.to_be_bytes());
        if self.version >= 6 {
            out.extend_from_slice(&[self.speaks.oldest, self.speaks.newest]);
        }
        debug_assert_eq!(out.len(), fixed_len(self.version));
        let used = encode_set(&self.moving_out, MAX_MOVING_BYTES, &mut out);
        encode_set(&self.kept_in, MAX_MOVING_BYTES - used, &mut out);
        seal(out, key)
    }

    /// Checks and decodes in any version this build speaks.
    pub fn decode(bytes: &[u8], keys: &Keyring) -> Result<Heartbeat, DecodeError> {
        Heartbeat::decode_within(bytes, keys, Versions::BUILD)
    }

    /// Checks and decodes a heartbeat written in one of `versions`;
    /// nothing of an unauthenticated datagram is used.
    pub fn decode_within(
        bytes: &[u8],
        keys: &Keyring,
        versions: Versions,
    ) -> Result<Heartbeat, DecodeError> {
        if bytes.len() < MIN_LEN_V5 || bytes.len() > MIN_LEN + MAX_MOVING_BYTES {
            return Err(DecodeError::Length);
        }
        if &bytes[0..4] != MAGIC {
            return Err(DecodeError::Magic);
        }
        let version = bytes[4];
        if !versions.speaks(version) || !Versions::BUILD.speaks(version) {
            return Err(DecodeError::Version);
        }
        if bytes[5] != KIND_HEARTBEAT {
            return Err(DecodeError::Version);
        }
        let tag = fixed_len(version);
        if bytes.len() < tag + 2 + MAC_LEN {
            return Err(DecodeError::Length);
        }
        let body = bytes.len() - MAC_LEN;
        let authentic = keys.0.iter().any(|key| {
            let mut mac = key.mac();
            mac.update(&bytes[..body]);
            mac.verify_slice(&bytes[body..]).is_ok()
        });
        if !authentic {
            return Err(DecodeError::Auth);
        }
        let flags = bytes[36];
        let Some(state) = state_of_byte((flags >> 1) & 3) else {
            return Err(DecodeError::Field);
        };
        if flags >> 4 != 0 {
            return Err(DecodeError::Field);
        }
        let speaks = if version >= 6 {
            let (oldest, newest) = (bytes[FIXED_V5], bytes[FIXED_V5 + 1]);
            if !(oldest <= version && version <= newest) {
                return Err(DecodeError::Field);
            }
            Versions { oldest, newest }
        } else {
            Versions {
                oldest: version,
                newest: version,
            }
        };
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let (moving_out, used_out) = decode_set(&bytes[tag..body])?;
        let (kept_in, used_in) = decode_set(&bytes[tag + used_out..body])?;
        if tag + used_out + used_in != body {
            return Err(DecodeError::Length);
        }
        Ok(Heartbeat {
            version,
            speaks,
            sender: u16::from_be_bytes([bytes[6], bytes[7]]),
            incarnation: u64_at(8),
            sequence: u64_at(16),
            view: u64_at(24),
            weight: u32::from_be_bytes(bytes[32..36].try_into().expect("4 bytes")),
            ready: flags & 1 == 1,
            state,
            transient: flags & 8 != 0,
            ack: (u64_at(37), u64_at(45)),
            digest: u64_at(53),
            farm: u64_at(61),
            moving_out,
            kept_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef-farm-key").unwrap()
    }

    fn ring() -> Keyring {
        Keyring::from(key())
    }

    #[test]
    fn a_keyring_sends_with_its_first_key_and_accepts_any() {
        let new = Key::new(b"the farm's next key, 32 bytes..").unwrap();
        let stranger = Key::new(b"another farm's key entirely....").unwrap();
        let old_first = Keyring::new(vec![key(), new.clone()]).unwrap();
        let new_first = Keyring::new(vec![new.clone(), key()]).unwrap();
        let new_only = Keyring::from(new.clone());
        assert!(Keyring::new(Vec::new()).is_none());
        // Sent with the old key: both rings of the rotation accept it, the
        // new key alone does not.
        let by_old = hb().encode(&old_first);
        assert_eq!(by_old, hb().encode(&ring()));
        assert_eq!(Heartbeat::decode(&by_old, &new_first), Ok(hb()));
        assert_eq!(
            Heartbeat::decode(&by_old, &new_only),
            Err(DecodeError::Auth)
        );
        // Sent with the new key: accepted wherever the new key is held.
        let by_new = hb().encode(&new_first);
        assert_eq!(Heartbeat::decode(&by_new, &old_first), Ok(hb()));
        assert_eq!(Heartbeat::decode(&by_new, &new_only), Ok(hb()));
        assert_eq!(Heartbeat::decode(&by_new, &ring()), Err(DecodeError::Auth));
        let by_stranger = hb().encode(&Keyring::from(stranger));
        assert_eq!(
            Heartbeat::decode(&by_stranger, &old_first),
            Err(DecodeError::Auth)
        );
    }

    fn hb() -> Heartbeat {
        Heartbeat {
            version: VERSION,
            speaks: Versions::BUILD,
            sender: 3,
            incarnation: 7,
            sequence: 42,
            view: 0b1011,
            weight: 2,
            ready: true,
            state: NodeState::Up,
            transient: false,
            ack: (5, 40),
            digest: 0x1234_5678_9abc_def0,
            farm: 0x0fed_cba9_8765_4321,
            moving_out: BucketSet::none(),
            kept_in: BucketSet::none(),
        }
    }

    fn resign(b: &mut [u8]) {
        let body = b.len() - MAC_LEN;
        let mut mac = key().mac();
        mac.update(&b[..body]);
        b[body..].copy_from_slice(&mac.finalize().into_bytes());
    }

    #[test]
    fn round_trip() {
        let bytes = hb().encode(&ring());
        assert_eq!(bytes.len(), MIN_LEN);
        assert_eq!(Heartbeat::decode(&bytes, &ring()), Ok(hb()));
    }

    /// The previous version's layout, frozen: what a node of the previous
    /// release sends and decodes (its fields at the same offsets, no
    /// version bytes).
    #[test]
    fn version_5_is_the_same_heartbeat_without_the_version_bytes() {
        let old = Heartbeat {
            version: 5,
            speaks: Versions {
                oldest: 5,
                newest: 5,
            },
            moving_out: BucketSet::Buckets(bits(64, 10..20)),
            ..hb()
        };
        let bytes = old.encode(&ring());
        assert_eq!(bytes[4], 5);
        assert_eq!(&bytes[61..69], &hb().farm.to_be_bytes());
        assert_eq!(bytes[69], 1, "the moving-out set follows the farm digest");
        assert_eq!(bytes.len(), MIN_LEN_V5 + 2 + 8);
        assert_eq!(Heartbeat::decode(&bytes, &ring()), Ok(old.clone()));
        let new = hb().encode(&ring());
        assert_eq!(&bytes[..4], &new[..4]);
        assert_eq!(&bytes[5..69], &new[5..69], "the same fixed fields");
        assert_eq!(&new[69..71], &[5, 6]);
        // A node held at version 5 refuses version 6, as the previous
        // release does; this build reads both.
        let held = Versions::up_to(5).unwrap();
        assert_eq!(
            Heartbeat::decode_within(&new, &ring(), held),
            Err(DecodeError::Version)
        );
        assert_eq!(Heartbeat::decode_within(&bytes, &ring(), held), Ok(old));
    }

    #[test]
    fn two_nodes_talk_in_the_newest_version_both_speak() {
        let b = Versions::BUILD;
        assert_eq!(b.common(b), Some(6));
        assert_eq!(
            b.common(Versions {
                oldest: 5,
                newest: 5
            }),
            Some(5)
        );
        assert_eq!(
            b.common(Versions {
                oldest: 5,
                newest: 9
            }),
            Some(6)
        );
        assert_eq!(
            b.common(Versions {
                oldest: 7,
                newest: 8
            }),
            None
        );
        assert_eq!(
            b.common(Versions {
                oldest: 3,
                newest: 4
            }),
            None
        );
        assert_eq!(Versions::up_to(4), None);
        assert_eq!(Versions::up_to(7), None);
        assert_eq!(b.to_string(), "5-6");
        // A version-6 heartbeat whose versions do not hold its own is
        // refused.
        let mut bytes = hb().encode(&ring());
        bytes[69..71].copy_from_slice(&[7, 8]);
        resign(&mut bytes);
        assert_eq!(Heartbeat::decode(&bytes, &ring()), Err(DecodeError::Field));
    }

    fn bits(n: u32, set: impl IntoIterator<Item = u32>) -> Vec<u64> {
        let mut w = vec![0u64; n.div_ceil(64) as usize];
        for b in set {
            w[(b / 64) as usize] |= 1 << (b % 64);
        }
        w
    }

    #[test]
    fn moving_out_sets_round_trip_in_the_smaller_form() {
        // A few runs: ranges.
        let few = hb_moving(BucketSet::Buckets(bits(4096, (10..20).chain([4095]))));
        let bytes = few.encode(&ring());
        assert_eq!(bytes[FIXED], 1);
        let back = Heartbeat::decode(&bytes, &ring()).unwrap();
        for b in 0..4096 {
            assert_eq!(
                back.moving_out.contains(b),
                few.moving_out.contains(b),
                "{b}"
            );
        }
        // Scattered: a bitmap.
        let scattered = hb_moving(BucketSet::Buckets(bits(4096, (0..4096).step_by(3))));
        let bytes = scattered.encode(&ring());
        assert_eq!(bytes[FIXED], 2);
        assert_eq!(Heartbeat::decode(&bytes, &ring()), Ok(scattered));
        // Too many buckets for a datagram: every bucket not its own.
        let huge = hb_moving(BucketSet::Buckets(bits(1 << 20, (0..1 << 20).step_by(2))));
        let bytes = huge.encode(&ring());
        assert_eq!(bytes[FIXED], 3);
        assert_eq!(
            Heartbeat::decode(&bytes, &ring()).unwrap().moving_out,
            BucketSet::AllElse
        );
        // An empty set is "none".
        let empty = hb_moving(BucketSet::Buckets(bits(4096, [])));
        assert_eq!(empty.encode(&ring()).len(), MIN_LEN);
    }

    #[test]
    fn kept_in_sets_round_trip_and_share_the_room_with_moving_out() {
        let h = Heartbeat {
            moving_out: BucketSet::Buckets(bits(4096, 0..100)),
            kept_in: BucketSet::Buckets(bits(4096, [7, 300, 301])),
            ..hb()
        };
        let back = Heartbeat::decode(&h.encode(&ring()), &ring()).unwrap();
        for b in 0..4096 {
            assert_eq!(back.moving_out.contains(b), b < 100, "{b}");
            assert_eq!(back.kept_in.contains(b), [7, 300, 301].contains(&b), "{b}");
        }
        // A moving-out bitmap that fills the room leaves none for the kept-in
        // set, which is then sent as "every bucket not its own".
        let big = Heartbeat {
            moving_out: BucketSet::Buckets(bits(11_136, (0..11_136).step_by(2))),
            kept_in: BucketSet::Buckets(bits(11_136, [1])),
            ..hb()
        };
        let bytes = big.encode(&ring());
        assert!(bytes.len() <= MIN_LEN + MAX_MOVING_BYTES);
        let back = Heartbeat::decode(&bytes, &ring()).unwrap();
        assert_eq!(back.moving_out, big.moving_out);
        assert_eq!(back.kept_in, BucketSet::AllElse);
    }

    fn hb_moving(moving_out: BucketSet) -> Heartbeat {
        Heartbeat { moving_out, ..hb() }
    }

    #[test]
    fn malformed_moving_sets_are_refused() {
        let mut bytes = hb().encode(&ring());
        bytes.truncate(FIXED);
        // Ranges: a count that does not match, an empty run, a run past the end.
        for tail in [
            vec![1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1],
            vec![1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
            vec![1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2],
            vec![2, 0, 0, 0, 64, 0],
            vec![2, 0xff, 0, 0, 0],
            vec![0, 1],
            vec![9],
        ] {
            let mut b = bytes.clone();
            b.extend_from_slice(&tail);
            b.extend_from_slice(&[0; MAC_LEN]);
            resign(&mut b);
            assert!(Heartbeat::decode(&b, &ring()).is_err(), "{tail:?}");
        }
    }

    #[test]
    fn any_flipped_bit_or_other_key_fails_authentication() {
        let bytes = hb().encode(&ring());
        for i in 6..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert_eq!(
                Heartbeat::decode(&b, &ring()),
                Err(DecodeError::Auth),
                "byte {i}"
            );
        }
        let other = Keyring::from(Key::new(b"another key of the farm!").unwrap());
        assert_eq!(Heartbeat::decode(&bytes, &other), Err(DecodeError::Auth));
    }

    #[test]
    fn bad_framing_is_named() {
        let bytes = hb().encode(&ring());
        assert_eq!(
            Heartbeat::decode(&bytes[..MIN_LEN - 1], &ring()),
            Err(DecodeError::Length)
        );
        let mut b = bytes.clone();
        b[0] = b'X';
        assert_eq!(Heartbeat::decode(&b, &ring()), Err(DecodeError::Magic));
        let mut b = bytes;
        b[4] = 2;
        assert_eq!(Heartbeat::decode(&b, &ring()), Err(DecodeError::Version));
        assert!(Key::new(b"short").is_none());
    }

    #[test]
    fn state_and_transient_round_trip_and_undefined_flags_are_refused() {
        for (state, byte) in [
            (NodeState::Stop, 0),
            (NodeState::Wait, 1),
            (NodeState::Up, 2),
        ] {
            assert_eq!(state_byte(state), byte);
            assert_eq!(state_of_byte(byte), Some(state));
            for transient in [false, true] {
                let h = Heartbeat {
                    state,
                    transient,
                    ready: state == NodeState::Up && !transient,
                    ..hb()
                };
                assert_eq!(Heartbeat::decode(&h.encode(&ring()), &ring()), Ok(h));
            }
        }
        assert_eq!(state_of_byte(3), None);
        // A correctly signed message with an undefined state or flag bit.
        for flags in [0b0110u8, 0b1_0000] {
            let mut b = hb().encode(&ring());
            b[36] = flags;
            resign(&mut b);
            assert_eq!(Heartbeat::decode(&b, &ring()), Err(DecodeError::Field));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Heartbeat::decode(&b, &ring());
        }

        #[test]
        fn arbitrary_signed_tails_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut b = hb().encode(&ring());
            b.truncate(FIXED);
            b.extend_from_slice(&tail);
            b.extend_from_slice(&[0; MAC_LEN]);
            resign(&mut b);
            let _ = Heartbeat::decode(&b, &ring());
        }
    }
}
