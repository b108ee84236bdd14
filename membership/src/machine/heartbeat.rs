//! Heartbeats sent: one per peer per period (and at once when the view
//! changes), in the newest protocol version both sides speak.

use super::{Machine, Transmit};
use crate::wire::{Heartbeat, Versions};
use std::time::Duration;

/// How often a node writes its newest version to a peer heard only in an
/// older one. A version-5 heartbeat cannot say that its sender speaks
/// more, so two upgraded nodes that heard each other in version 5 would
/// stay there; a peer of the previous release drops the probe (as one lost
/// heartbeat, and reports a newer version refused).
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

impl Machine {
    /// Time passed: expire peers, send heartbeats when due.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.update(now);
        if now >= self.next_heartbeat {
            self.sequence += 1;
            let weight = self.my_weight;
            let moving_out = self.moving_out_set();
            let kept_in = self.kept_in_set();
            let mine = self.s.versions;
            let versions: Vec<u8> = self
                .peers
                .iter_mut()
                .map(|p| {
                    let version = talks(mine, p.speaks);
                    if version < mine.newest && !p.announced && now >= p.probe_at {
                        p.probe_at = now + PROBE_EVERY;
                        mine.newest
                    } else {
                        version
                    }
                })
                .collect();
            for (p, version) in self.peers.iter().zip(versions) {
                let hb = Heartbeat {
                    version,
                    speaks: self.s.versions,
                    sender: self.s.me,
                    incarnation: self.incarnation,
                    sequence: self.sequence,
                    view: self.view,
                    weight,
                    ready: self.offers() && !self.policy_withdrawn,
                    state: self.state,
                    transient: self.transient,
                    ack: (p.incarnation, p.sequence.iter().copied().max().unwrap_or(0)),
                    digest: self.digest,
                    farm: self.s.farm,
                    moving_out: moving_out.clone(),
                    kept_in: kept_in.clone(),
                };
                let bytes = hb.encode(&self.s.keys);
                for network in 0..self.s.networks {
                    self.transmits.push_back(Transmit {
                        network,
                        to: p.id,
                        bytes: bytes.clone(),
                    });
                }
            }
            // Catch up without a burst if the caller was late.
            self.next_heartbeat =
                (self.next_heartbeat + self.s.period).max(now + self.s.period / 2);
        }
    }

    /// Releases a node held at an older version: it speaks `versions`
    /// from now on. What each peer speaks is learnt again from its next
    /// heartbeat, the first heartbeats going out in this node's newest (a
    /// peer that cannot read them answers in its own, and hears this node
    /// in it from then on). A lower newest version is refused (false):
    /// peers that heard this incarnation announce a newer one would keep
    /// writing it; holding a node back takes a restart.
    pub fn set_versions(&mut self, now: Duration, versions: Versions) -> bool {
        if versions.newest < self.s.versions.newest {
            return false;
        }
        if versions != self.s.versions {
            self.s.versions = versions;
            self.peers.iter_mut().for_each(|p| {
                p.speaks = None;
                p.announced = false;
            });
            self.next_heartbeat = self.next_heartbeat.min(now);
        }
        true
    }

    pub fn versions(&self) -> Versions {
        self.s.versions
    }
}

/// The version to write a peer's heartbeats in: the newest both speak;
/// this node's newest while the peer is unheard (or shares none: it then
/// reports this node as speaking another version).
pub(super) fn talks(mine: Versions, peer: Option<Versions>) -> u8 {
    peer.and_then(|p| mine.common(p)).unwrap_or(mine.newest)
}
