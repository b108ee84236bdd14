//! Heartbeats received: decoded, authenticated, checked against replay,
//! and taken as what their sender is now.

use super::{Event, Machine};
use crate::wire::{DecodeError, Heartbeat, MAGIC};
use std::time::Duration;

/// Why a datagram claiming to come from a peer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Its HMAC matches no key of the keyring (another key).
    Authentication,
    /// Another protocol version (the byte it carries).
    Version(u8),
}

/// How long a refused datagram keeps its claimed sender reported as
/// rejected.
pub const REJECTION_SHOWN: Duration = Duration::from_secs(2);

impl Machine {
    /// A datagram received on heartbeat network `network`.
    pub fn handle_datagram(&mut self, now: Duration, network: usize, bytes: &[u8]) {
        let hb = match Heartbeat::decode_within(bytes, &self.s.keys, self.s.versions) {
            Ok(hb) => hb,
            Err(DecodeError::Auth) => {
                self.counters.dropped_unauthenticated += 1;
                self.note_rejected(now, bytes, Rejection::Authentication);
                return;
            }
            Err(DecodeError::Version) if bytes.len() > 5 && &bytes[..4] == MAGIC => {
                self.counters.dropped_version += 1;
                self.note_rejected(now, bytes, Rejection::Version(bytes[4]));
                return;
            }
            Err(_) => {
                self.counters.dropped_malformed += 1;
                return;
            }
        };
        let Some(peer) = self.peers.iter_mut().find(|p| p.id == hb.sender) else {
            self.counters.dropped_unknown_sender += 1;
            return;
        };
        if network >= peer.heard.len() {
            self.counters.dropped_malformed += 1;
            return;
        }
        if (hb.incarnation, hb.sequence) <= (peer.incarnation, peer.sequence[network]) {
            self.counters.dropped_replayed += 1;
            return;
        }
        if hb.incarnation != peer.incarnation {
            // A restarted peer: what we heard of its earlier life is void.
            peer.heard.iter_mut().for_each(|h| *h = None);
            peer.sequence.iter_mut().for_each(|q| *q = 0);
            peer.acked = 0;
            peer.announced = false;
        }
        // The newest heartbeat over all networks says what the peer is: an
        // older one, late on another network, only proves it alive (its
        // state, and above all its moving-out set, would go back in time).
        let newest = hb.sequence > peer.sequence.iter().copied().max().unwrap_or(0);
        peer.incarnation = hb.incarnation;
        peer.sequence[network] = hb.sequence;
        peer.heard[network] = Some(now);
        // A version-5 heartbeat carries no versions: it says "5 alone"
        // unless this incarnation announced more (then it was written
        // down to a heartbeat of ours in version 5; taking it at its word
        // would bounce version 5 between two nodes that both speak 6).
        if hb.version > crate::wire::OLDEST_VERSION || !peer.announced {
            peer.speaks = Some(hb.speaks);
            peer.announced = hb.version > crate::wire::OLDEST_VERSION;
        }
        if newest {
            if (hb.view, hb.digest) != (peer.view, peer.digest) {
                // Acknowledge its new view at once (see the rules above).
                self.next_heartbeat = self.next_heartbeat.min(now);
            }
            if hb.farm != peer.farm {
                self.events
                    .push_back(Event::farm(peer.id, self.s.farm, hb.farm));
            }
            peer.farm = hb.farm;
            if hb.ack.0 == self.incarnation {
                peer.acked = peer.acked.max(hb.ack.1);
            }
            peer.view = hb.view;
            peer.digest = hb.digest;
            peer.moving_out = hb.moving_out;
            peer.kept_in = hb.kept_in;
            peer.weight = hb.weight;
            peer.ready = hb.ready;
            peer.state = hb.state;
            peer.transient = hb.transient;
        }
        self.counters.received += 1;
        self.update(now);
    }

    /// Reports the peer a refused datagram claims to come from (the claim
    /// is not trusted: it only says where to look).
    pub(super) fn note_rejected(&mut self, now: Duration, bytes: &[u8], why: Rejection) {
        let Some(id) = bytes.get(6..8).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            return;
        };
        if let Some(p) = self.peers.iter_mut().find(|p| p.id == id) {
            p.rejected = Some((now, why));
        }
    }

    /// A datagram from an address that is no peer's, dropped by the
    /// driver.
    pub fn note_not_from_peer(&mut self) {
        self.counters.dropped_not_peer += 1;
    }
}
