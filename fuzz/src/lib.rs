//! The bodies of Herd's fuzz targets. `cargo +nightly fuzz run <target>`
//! runs them under libFuzzer (`ci/fuzz.sh`); `cargo test` here replays the
//! committed corpora through them on the stable toolchain.
//!
//! Each asserts what must hold for any input, beyond "no panic":
//! - `decision`: the fast path decides every frame as the layered parser
//!   does; replies are written only where the frame has room.
//! - `heartbeat`: nothing unauthenticated is decoded; an authenticated
//!   datagram (any body, sealed with the farm's key) decodes or is
//!   refused, and what decodes encodes again into something that decodes;
//!   a membership machine takes any of them.
//! - `config`: any text is a config or an error naming what is wrong; a
//!   config that validates can be planned as a reload of the example.
//! - `census`: any `/proc/net/tcp` text yields connections to the VIPs
//!   only.

use fastpath::decision::{Classifier, Verdict};
use fastpath::flows::FlowTracker;
use fastpath::table::BucketTable;
use membership::assign::Member;
use membership::machine::{Machine, Settings, SplitBrain};
use membership::wire::{seal, Heartbeat, Key, Keyring, Versions};
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const N: u32 = 4096;

/// The example node's classifier (its VIPs, IPv4 and IPv6, and rules:
/// tcp 80 by client and port, tcp 7000 and udp 9000 by client), as a node
/// builds it from its config.
fn classifier() -> Classifier {
    fastpath::node::classifier(&example(), [0x02, 0, 0, 0, 0, 0x01])
}

fn example() -> config::Config {
    config::Config::from_toml(include_str!("../../examples/node.toml"))
        .expect("the example is valid")
}

struct Decision {
    classifier: Classifier,
    tables: [BucketTable; 4],
    flows: FlowTracker,
    now: u32,
}

thread_local! {
    static DECISION: RefCell<Decision> = RefCell::new(Decision {
        classifier: classifier(),
        tables: [
            BucketTable::new(1, N, 0..N, true),
            BucketTable::new(1, N, [], false),
            BucketTable::new(1, N, (0..N).filter(|b| b % 2 == 0), true),
            BucketTable::new(1, N, (0..N).filter(|b| b % 3 == 0), false)
                .with_moves((0..N).filter(|b| b % 3 == 1), (0..N).filter(|b| b % 7 == 2), None),
        ],
        flows: FlowTracker::new(256, 1000),
        now: 0,
    });
}

/// The first byte picks the bucket table (all, none, half, some moving);
/// the rest is the frame.
pub fn decision(data: &[u8]) {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    DECISION.with(|d| {
        let d = &mut *d.borrow_mut();
        let table = &d.tables[usize::from(pick % 4)];
        let verdict = d.classifier.classify(frame, table);
        assert_eq!(
            verdict,
            d.classifier.classify_general(frame, table),
            "the fast path and the layered parser differ"
        );
        // Flow tracking across inputs (the tracker fills and expires).
        d.now = d.now.wrapping_add(7);
        let _ = d
            .classifier
            .classify_tracked(frame, table, Some((&mut d.flows, d.now)));
        let mut room = frame.to_vec();
        match verdict {
            Verdict::ArpReply { arp_offset, vip } => {
                let v = d.classifier.vips4[usize::from(vip)];
                let _ = fastpath::reply::arp_reply_in_place(
                    &mut room,
                    usize::from(arp_offset),
                    d.classifier.own_mac,
                    v.address,
                    v.mac,
                );
            }
            Verdict::NdpAdvert { ipv6_offset, vip } => {
                let v = d.classifier.vips6[usize::from(vip)];
                room.resize(frame.len().max(128), 0);
                if let Some(len) = fastpath::reply::ndp_advert_in_place(
                    &mut room,
                    usize::from(ipv6_offset),
                    d.classifier.own_mac,
                    v.address,
                    v.mac,
                ) {
                    assert!(len <= room.len(), "an advertisement past its room");
                }
            }
            _ => {}
        }
    });
}

fn keyring() -> Keyring {
    Keyring::from(Key::new(b"fuzzing farm key, 32 bytes long.").expect("a key"))
}

thread_local! {
    static MACHINE: RefCell<(Machine, Duration)> = RefCell::new((
        Machine::new(
            Settings {
                nodes: (1..=3).map(|id| Member { id, weight: 1 }).collect(),
                me: 1,
                period: Duration::from_millis(25),
                dead_after: Duration::from_millis(200),
                networks: 2,
                n_buckets: N,
                split_brain: SplitBrain::ServeAll,
                keys: keyring(),
                versions: Versions::BUILD,
                farm: 0,
                continuity: true,
                drain_timeout: Duration::from_secs(1),
                overflow_hold: Duration::from_secs(1),
            },
            1,
            Duration::ZERO,
        ),
        Duration::ZERO,
    ));
}

/// The input as a datagram (refused: not authenticated), then sealed with
/// the farm's key (past authentication), to the decoder and to a machine.
pub fn heartbeat(data: &[u8]) {
    let keys = keyring();
    let _ = Heartbeat::decode(data, &keys);
    let sealed = seal(data.to_vec(), keys.sending());
    if let Ok(hb) = Heartbeat::decode(&sealed, &keys) {
        let again = hb.encode(&keys);
        let back = Heartbeat::decode(&again, &keys).expect("what decodes encodes again");
        assert_eq!(
            (back.sender, back.incarnation, back.sequence, back.view),
            (hb.sender, hb.incarnation, hb.sequence, hb.view)
        );
    }
    MACHINE.with(|m| {
        let (machine, now) = &mut *m.borrow_mut();
        *now += Duration::from_millis(3);
        let network = usize::from(data.first().copied().unwrap_or(0) % 2);
        machine.handle_datagram(*now, network, &sealed);
        machine.handle_datagram(*now, network, data);
        // Its input overflowing now and then (a flood).
        if data.get(1).is_some_and(|b| b % 4 == 0) {
            machine.note_input_overflow(*now);
        }
        machine.handle_timeout(*now);
        while machine.poll_transmit().is_some() {}
        while machine.poll_event().is_some() {}
    });
}

/// Any text as a config; a valid one planned as a reload of the example.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Validation reads the key files a config names: keep the fuzzer off
    // device and kernel files (an endless read is not a finding).
    if text.contains("/dev") || text.contains("/proc") || text.contains("/sys") {
        return;
    }
    if let Ok(c) = config::Config::from_toml(text) {
        let _ = config::reload::plan(&example(), &c);
        let _ = c.static_ownership();
    }
}

/// Any text as `/proc/net/tcp{,6}`.
pub fn census(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vips = [
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
        "2001:2::100".parse().expect("an address"),
    ];
    for c in herd_control::census::parse(text, &vips) {
        assert!(
            vips.contains(&c.vip),
            "a connection to {} is no VIP's",
            c.vip
        );
    }
}

#[cfg(test)]
mod tests {
    /// Every committed corpus input through its target (a stable smoke of
    /// the fuzz targets: what the fuzzer found interesting still passes).
    #[test]
    fn the_corpora_replay() {
        let targets: [(&str, fn(&[u8])); 4] = [
            ("decision", super::decision),
            ("heartbeat", super::heartbeat),
            ("config", super::config),
            ("census", super::census),
        ];
        for (name, target) in targets {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(name);
            let mut n = 0;
            for entry in std::fs::read_dir(&dir).expect("a committed corpus") {
                let path = entry.expect("an entry").path();
                target(&std::fs::read(&path).expect("a corpus file"));
                n += 1;
            }
            assert!(n > 0, "{name}: empty corpus");
            eprintln!("{name}: {n} inputs");
        }
    }
}
