//! The XDP pre-filter and the ingress guard's tc program, run in the
//! kernel (BPF_PROG_TEST_RUN, as root), held to the Rust decision on the
//! decision tests' frames, and recognising peers' heartbeats.

#[path = "../../packet/tests/frames/mod.rs"]
mod frames;
use fastpath::decision::{Classifier, Verdict};
use fastpath::table::BucketTable;
use frames::*;
use proptest::prelude::*;

mod xdp {
    use super::*;
    use fastpath::dpdk::bpf::Object;
    use fastpath::prefilter::{Maps, XdpVerdict, OBJECT, PROGRAM};

    /// The program loaded with `c`'s configuration.
    fn loaded(c: &Classifier) -> (Object, Maps) {
        let object = Object::load(OBJECT).expect("the XDP pre-filter loads (run as root)");
        let maps = Maps::of(&object).expect("its maps");
        maps.configure(c).expect("configured");
        (object, maps)
    }

    /// What the program must do with a frame the fastpath decides as
    /// `verdict`: pass what it accepts, drop what another node owns, and
    /// leave the rest to the fastpath. Where the program is unsure it may
    /// always leave a frame to the fastpath.
    fn agrees(xdp: XdpVerdict, verdict: &Verdict) -> bool {
        match xdp {
            XdpVerdict::Pass => *verdict == Verdict::Accept,
            XdpVerdict::Drop => *verdict == NOT_OWNED,
            XdpVerdict::ToDpdk => true,
            XdpVerdict::Other(_) => false,
        }
    }

    #[test]
    fn owned_buckets_pass_with_the_nic_mac_others_drop_the_rest_go_to_dpdk() {
        let c = classifier();
        let (object, maps) = loaded(&c);
        let f = &fast_candidates()[0]; // TCP 80 to the VIP: a rule
        for (table, want) in [(all(), XdpVerdict::Pass), (none(), XdpVerdict::Drop)] {
            maps.publish(&table).unwrap();
            let (code, out) = object.run_xdp(PROGRAM, f).unwrap();
            assert_eq!(XdpVerdict::from_code(code), want);
            if want == XdpVerdict::Pass {
                assert_eq!(out[..6], OWN, "the destination MAC is the NIC's");
                assert_eq!(out[6..], f[6..]);
            }
        }
        // No rule (TCP 22, IPv4 and IPv6), a moving bucket: the fastpath's.
        maps.publish(&all()).unwrap();
        for f in [&fast_candidates()[3], &fast_candidates()[8]] {
            let (code, _) = object.run_xdp(PROGRAM, f).unwrap();
            assert_eq!(XdpVerdict::from_code(code), XdpVerdict::ToDpdk);
        }
        let moving = BucketTable::new(1, N, std::iter::empty(), true).with_moves(
            0..N,
            std::iter::empty(),
            None,
        );
        maps.publish(&moving).unwrap();
        let (code, _) = object.run_xdp(PROGRAM, f).unwrap();
        assert_eq!(XdpVerdict::from_code(code), XdpVerdict::ToDpdk);
        let k = maps.counts().unwrap();
        assert_eq!((k.passed, k.dropped, k.to_fastpath), (1, 1, 3));
    }

    #[test]
    fn the_program_hashes_as_herd_hash_v1() {
        // One bucket owned at a time: the program passes exactly the
        // frames whose bucket (by the Rust hash) is that one.
        let c = classifier();
        let (object, maps) = loaded(&c);
        let n = 7;
        // TCP and UDP to the VIPs with a rule, IPv4 and IPv6, both
        // affinities.
        let candidates = fast_candidates();
        for f in candidates[..3].iter().chain(&candidates[5..8]) {
            let owner = (0..n)
                .find(|b| c.classify(f, &BucketTable::new(1, n, [*b], true)) == Verdict::Accept)
                .expect("some bucket owns the frame");
            // The kernel takes IPv6 from the TAP only: the fastpath hands
            // it an owned IPv6 frame.
            let ipv6 = f[12..14] == [0x86, 0xdd];
            for b in 0..n {
                maps.publish(&BucketTable::new(1, n, [b], true)).unwrap();
                let (code, _) = object.run_xdp(PROGRAM, f).unwrap();
                let want = match (b == owner, ipv6) {
                    (true, false) => XdpVerdict::Pass,
                    (true, true) => XdpVerdict::ToDpdk,
                    (false, _) => XdpVerdict::Drop,
                };
                assert_eq!(XdpVerdict::from_code(code), want, "bucket {b}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        /// The program's verdict agrees with the fastpath's decision,
        /// whatever the header bytes, the length, the table and the VIPs.
        #[test]
        fn the_prefilter_agrees_with_the_decision(
            which in 0usize..10,
            flips in proptest::collection::vec((0usize..60, any::<u8>()), 0..3),
            cut in 0usize..80,
            extend in 0usize..4,
            modulus in 1u32..5,
            moves in any::<bool>(),
            second_vip in any::<bool>(),
            ip_len in proptest::option::of(0u16..80),
        ) {
            let mut c = classifier();
            if second_vip {
                c.vips4.push(second_vip4());
            }
            let (object, maps) = loaded(&c);
            let mut f = fast_candidates()[which].clone();
            // The IPv4 total length near the headers' end (the edge the
            // fast path checks).
            if let (Some(len), true) = (ip_len, which < 5) {
                f[16..18].copy_from_slice(&len.to_be_bytes());
            }
            let f = mutated(f, &flips, cut, extend);
            let table = table_of(modulus, moves);
            maps.publish(&table).unwrap();
            // The kernel refuses a test run on less than an Ethernet header.
            prop_assume!(f.len() >= 14);
            let (code, _) = object.run_xdp(PROGRAM, &f).unwrap();
            let verdict = c.classify(&f, &table);
            prop_assert!(agrees(XdpVerdict::from_code(code), &verdict),
                "xdp {:?}, fastpath {:?}", XdpVerdict::from_code(code), verdict);
        }
    }
}

/// Heartbeats: a node at 198.18.0.11 port 7100 (IPv4) and 2001:2::11
/// port 7100 (IPv6), peers at .12 and 2001:2::12.
mod heartbeats {
    use super::*;
    use fastpath::dpdk::bpf::Object;
    use fastpath::prefilter::{Maps, XdpVerdict, HEARTBEAT_IN, OBJECT, PROGRAM};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    const ME4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
    const PEER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
    const PORT: u16 = 7100;
    const TC_ACT_OK: u32 = 0;
    const TC_ACT_SHOT: u32 = 2;
    const TC_ACT_REDIRECT: u32 = 7;

    fn me6() -> Ipv6Addr {
        "2001:2::11".parse().unwrap()
    }
    fn peer6() -> Ipv6Addr {
        "2001:2::12".parse().unwrap()
    }

    fn recognising(elf: &[u8]) -> (Object, Maps) {
        let object = Object::load(elf).expect("the program loads (run as root)");
        let maps = Maps::of(&object).expect("its maps");
        maps.configure(&classifier()).expect("configured");
        maps.publish(&none()).unwrap();
        let local = [
            SocketAddr::new(IpAddr::V4(ME4), PORT),
            SocketAddr::new(IpAddr::V6(me6()), PORT),
        ];
        let peers = [IpAddr::V4(PEER4), IpAddr::V6(peer6())];
        maps.recognise_heartbeats(&local, &peers).unwrap();
        (object, maps)
    }

    fn udp4(src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        let mut v = V4::new(17, l4(PORT, dport));
        v.src = src;
        v.dst = dst;
        eth(OWN, CLIENT_MAC, 0x0800, &v.bytes())
    }

    fn udp6(src: Ipv6Addr, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
        let mut f = v6_frame(src, dst, 17, 64, &l4(PORT, dport));
        f[..6].copy_from_slice(&OWN);
        f
    }

    /// (frame, a peer's heartbeat, junk to the heartbeat port)
    fn cases() -> Vec<(Vec<u8>, bool, bool)> {
        let stranger4 = Ipv4Addr::new(198, 19, 3, 4);
        let stranger6: Ipv6Addr = "2001:2:1::7".parse().unwrap();
        vec![
            (udp4(PEER4, ME4, PORT), true, false),
            (udp4(stranger4, ME4, PORT), false, true),
            // A peer's address spoofed: it is recognised as a heartbeat
            // here; the membership machine refuses it (HMAC, replay).
            (udp4(PEER4, ME4, PORT + 1), false, false),
            (udp4(PEER4, PEER4, PORT), false, false),
            (udp6(peer6(), me6(), PORT), true, false),
            (udp6(stranger6, me6(), PORT), false, true),
            (udp6(peer6(), me6(), 53), false, false),
        ]
    }

    #[test]
    fn the_prefilter_passes_peers_heartbeats_and_drops_junk_to_the_heartbeat_port() {
        let (object, maps) = recognising(OBJECT);
        for (f, heartbeat, junk) in cases() {
            let (code, out) = object.run_xdp(PROGRAM, &f).unwrap();
            let want = if heartbeat {
                XdpVerdict::Pass
            } else if junk {
                XdpVerdict::Drop
            } else {
                XdpVerdict::ToDpdk
            };
            assert_eq!(XdpVerdict::from_code(code), want, "{f:02x?}");
            assert_eq!(out, f, "a heartbeat passes unchanged");
        }
        let k = maps.counts().unwrap();
        assert_eq!((k.heartbeats, k.heartbeat_junk), (2, 2));
    }

    #[test]
    fn the_guard_redirects_peers_heartbeats_to_the_tap_and_drops_junk() {
        let (object, maps) = recognising(fastpath::prefilter::GUARD);
        // No TAP yet: every frame is left alone.
        let (code, _) = object.run_tc(HEARTBEAT_IN, &cases()[0].0).unwrap();
        assert_eq!(code, TC_ACT_OK);
        object
            .map("herd_tap")
            .unwrap()
            .update(&0u32.to_ne_bytes(), &1u32.to_ne_bytes())
            .unwrap();
        for (f, heartbeat, junk) in cases() {
            let (code, _) = object.run_tc(HEARTBEAT_IN, &f).unwrap();
            let want = if heartbeat {
                TC_ACT_REDIRECT
            } else if junk {
                TC_ACT_SHOT
            } else {
                TC_ACT_OK
            };
            assert_eq!(code, want, "{f:02x?}");
        }
        // VIP traffic is not the tc program's: it leaves it alone.
        let (code, _) = object.run_tc(HEARTBEAT_IN, &fast_candidates()[0]).unwrap();
        assert_eq!(code, TC_ACT_OK);
        let k = maps.counts().unwrap();
        assert_eq!((k.heartbeats, k.heartbeat_junk), (2, 2));
    }

    #[test]
    fn the_socket_filter_copies_only_what_the_lcore_needs() {
        use fastpath::prefilter::SOCKET_FILTER;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        let (object, maps) = recognising(fastpath::prefilter::GUARD);
        let kept = |f: &[u8]| object.run_socket_filter(SOCKET_FILTER, f).unwrap() > 0;
        // Every bucket another node's.
        assert!(!kept(&tcp_segment(40000, SYN)), "another node's SYN");
        assert!(!kept(&tcp_segment(40000, RST)), "another node's RST");
        assert!(!kept(&tcp_segment(40000, RST | ACK)), "another node's RST");
        assert!(
            kept(&tcp_segment(40000, ACK)),
            "a connection's later segment is not hashed: the lcore decides it"
        );
        for (f, heartbeat, junk) in cases() {
            if heartbeat || junk {
                assert!(!kept(&f), "the tc program's: {f:02x?}");
            }
        }
        assert!(kept(&arp(1, CLIENT4, VIP4)), "ARP is the lcore's");
        // Every bucket this node's.
        maps.publish(&all()).unwrap();
        for flags in [SYN, RST, ACK, RST | ACK] {
            assert!(kept(&tcp_segment(40000, flags)), "flags {flags:#04x}");
        }
    }
}
