//! The packet decision of docs/design.md §2, case by case, on hand-built frames.

mod frames;
use frames::*;
use packet::decision::{Classifier, DropReason, Verdict, Vip};
use packet::reply;
use packet::table::BucketTable;
use packet::wire::Malformed;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[test]
fn arp_for_a_vip_is_answered_by_the_responder_only() {
    let c = classifier();
    let f = arp(1, CLIENT4, VIP4);
    assert_eq!(
        c.classify(&f, &all()),
        Verdict::ArpReply {
            arp_offset: 14,
            vip: 0
        }
    );
    assert_eq!(
        c.classify(&f, &none()),
        Verdict::Drop(DropReason::NotResponder)
    );
    // A reply or announcement about the VIP never reaches the kernel.
    assert_eq!(
        c.classify(&arp(2, VIP4, VIP4), &all()),
        Verdict::Drop(DropReason::NotResponder)
    );
    // ARP for the node's own address is the kernel's.
    assert_eq!(
        c.classify(&arp(1, CLIENT4, NODE4), &all()),
        Verdict::ToKernel
    );
}

#[test]
fn arp_reply_resolves_the_vip_to_the_vmac_from_the_nic_mac() {
    let mut f = arp(1, CLIENT4, VIP4);
    assert!(reply::arp_reply_in_place(&mut f, 14, OWN, VIP4, VMAC4));
    assert_eq!(&f[0..6], &CLIENT_MAC, "to the requester");
    assert_eq!(&f[6..12], &OWN, "from the NIC's own MAC, never the vMAC");
    assert_eq!(&f[20..22], &[0, 2], "a reply");
    assert_eq!(&f[22..28], &VMAC4, "sender MAC is the vMAC");
    assert_eq!(&f[28..32], &VIP4.octets());
    assert_eq!(&f[32..38], &CLIENT_MAC);
    assert_eq!(&f[38..42], &CLIENT4.octets());
    let mut short = f[..30].to_vec();
    assert!(!reply::arp_reply_in_place(&mut short, 14, OWN, VIP4, VMAC4));
}

#[test]
fn client_ip_port_keys_by_client_port() {
    let c = classifier();
    let f = V4::new(6, l4(40000, 80)).frame();
    assert_eq!(c.classify(&f, &only(key4(Some(40000)))), Verdict::Accept);
    assert_eq!(c.classify(&f, &all_but(key4(Some(40000)))), NOT_OWNED);
}

#[test]
fn client_ip_keys_by_address_alone() {
    let c = classifier();
    for sport in [1, 40000, 65535] {
        let tcp = V4::new(6, l4(sport, 7000)).frame();
        assert_eq!(c.classify(&tcp, &only(key4(None))), Verdict::Accept);
        assert_eq!(c.classify(&tcp, &all_but(key4(None))), NOT_OWNED);
        let udp = V4::new(17, l4(sport, 9000)).frame();
        assert_eq!(c.classify(&udp, &only(key4(None))), Verdict::Accept);
    }
}

#[test]
fn traffic_without_a_rule_is_dropped() {
    let c = classifier();
    assert_eq!(
        c.classify(&V4::new(6, l4(1234, 81)).frame(), &all()),
        NO_RULE
    );
    assert_eq!(
        c.classify(&V4::new(17, l4(1234, 80)).frame(), &all()),
        NO_RULE
    );
    assert_eq!(
        c.classify(&V4::new(47, vec![0; 8]).frame(), &all()),
        NO_RULE
    );
}

#[test]
fn icmp_is_keyed_by_client_ip() {
    let c = classifier();
    let ping = V4::new(1, vec![8, 0, 0, 0, 0, 1, 0, 1]).frame();
    assert_eq!(c.classify(&ping, &only(key4(None))), Verdict::Accept);
    assert_eq!(c.classify(&ping, &all_but(key4(None))), NOT_OWNED);
}

#[test]
fn fragments_are_keyed_by_client_ip() {
    let c = classifier();
    // First fragment (MF set): rule checked, keyed by address even on a
    // client-ip-port rule.
    let mut first = V4::new(6, l4(40000, 80));
    first.frag = 0x2000;
    assert_eq!(
        c.classify(&first.frame(), &only(key4(None))),
        Verdict::Accept
    );
    assert_eq!(c.classify(&first.frame(), &all_but(key4(None))), NOT_OWNED);
    // A later fragment carries no ports: keyed by address, no rule lookup.
    let mut later = V4::new(6, vec![0xde; 8]);
    later.frag = 185;
    assert_eq!(
        c.classify(&later.frame(), &only(key4(None))),
        Verdict::Accept
    );
    assert_eq!(c.classify(&later.frame(), &all_but(key4(None))), NOT_OWNED);
}

#[test]
fn ipv4_options_are_skipped() {
    let c = classifier();
    let mut p = V4::new(6, l4(40000, 80));
    p.options = 3;
    assert_eq!(
        c.classify(&p.frame(), &only(key4(Some(40000)))),
        Verdict::Accept
    );
}

#[test]
fn vlan_tags_are_skipped_up_to_two() {
    let c = classifier();
    let f = V4::new(6, l4(40000, 80)).frame();
    for tags in 1..=2 {
        assert_eq!(
            c.classify(&with_vlans(&f, tags), &only(key4(Some(40000)))),
            Verdict::Accept,
            "{tags} tags"
        );
    }
    assert_eq!(
        c.classify(&with_vlans(&f, 3), &all()),
        Verdict::Drop(DropReason::Malformed(Malformed::TooManyVlanTags))
    );
    let a = with_vlans(&arp(1, CLIENT4, VIP4), 1);
    assert_eq!(
        c.classify(&a, &all()),
        Verdict::ArpReply {
            arp_offset: 18,
            vip: 0
        }
    );
}

#[test]
fn non_vip_traffic_goes_to_the_kernel() {
    let c = classifier();
    let mut p = V4::new(6, l4(40000, 22));
    p.dst = NODE4;
    assert_eq!(
        c.classify(&eth(OWN, CLIENT_MAC, 0x0800, &p.bytes()), &none()),
        Verdict::ToKernel
    );
    // Broadcast and multicast of any kind (LLDP, heartbeats...).
    assert_eq!(
        c.classify(
            &eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], CLIENT_MAC, 0x88cc, &[0; 40]),
            &none()
        ),
        Verdict::ToKernel
    );
    assert_eq!(
        c.classify(&eth([0xff; 6], CLIENT_MAC, 0x9000, &[0; 40]), &none()),
        Verdict::ToKernel
    );
}

#[test]
fn frames_for_other_macs_and_our_own_echo_are_dropped() {
    let c = classifier();
    let mut p = V4::new(6, l4(40000, 22));
    p.dst = Ipv4Addr::new(198, 18, 0, 12);
    let other = eth([0x02, 0, 0, 0, 0, 0x02], CLIENT_MAC, 0x0800, &p.bytes());
    assert_eq!(
        c.classify(&other, &all()),
        Verdict::Drop(DropReason::NotForUs)
    );
    let echo = eth(CLIENT_MAC, OWN, 0x0800, &p.bytes());
    assert_eq!(
        c.classify(&echo, &all()),
        Verdict::Drop(DropReason::NotForUs)
    );
}

#[test]
fn multicast_delivery_is_accepted() {
    let c = Classifier {
        vips4: vec![Vip {
            address: VIP4,
            mac: [0x01, 0, 0x5e, 18, 0, 100],
        }],
        ..classifier()
    };
    let mut f = V4::new(6, l4(40000, 80)).frame();
    f[0..6].copy_from_slice(&[0x01, 0, 0x5e, 18, 0, 100]);
    assert_eq!(c.classify(&f, &only(key4(Some(40000)))), Verdict::Accept);
}

#[test]
fn malformed_ipv4_is_counted_not_trusted() {
    let c = classifier();
    let good = V4::new(6, l4(40000, 80)).frame();
    let m = |r| Verdict::Drop(DropReason::Malformed(r));
    assert_eq!(c.classify(&good[..10], &all()), m(Malformed::ShortEthernet));
    assert_eq!(c.classify(&good[..30], &all()), m(Malformed::ShortIpv4));
    assert_eq!(
        c.classify(&good[..good.len() - 1], &all()),
        m(Malformed::TruncatedIpv4)
    );
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    assert_eq!(c.classify(&bad_ihl, &all()), m(Malformed::BadIpv4Header));
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    assert_eq!(
        c.classify(&bad_version, &all()),
        m(Malformed::BadIpv4Header)
    );
    // A TCP datagram to the VIP too short for its ports.
    let cut = V4::new(6, vec![0, 80]).frame();
    assert_eq!(c.classify(&cut, &all()), m(Malformed::ShortL4));
    // Ethernet padding after the datagram is fine.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 8]);
    assert_eq!(
        c.classify(&padded, &only(key4(Some(40000)))),
        Verdict::Accept
    );
    let short_arp = &arp(1, CLIENT4, VIP4)[..30];
    assert_eq!(c.classify(short_arp, &all()), m(Malformed::ShortArp));
}

#[test]
fn ipv6_vip_is_keyed_like_ipv4_through_extension_headers() {
    let c = classifier();
    let tcp = l4(40000, 80);
    let f = v6_frame(client6(), vip6(), 6, 64, &tcp);
    assert_eq!(c.classify(&f, &only(key6(Some(40000)))), Verdict::Accept);
    assert_eq!(c.classify(&f, &all_but(key6(Some(40000)))), NOT_OWNED);
    // Hop-by-hop (8 bytes) then destination options (16 bytes) then TCP.
    let mut ext = vec![60, 0, 0, 0, 0, 0, 0, 0];
    ext.extend_from_slice(&[6, 1]);
    ext.extend_from_slice(&[0; 14]);
    ext.extend_from_slice(&tcp);
    let f = v6_frame(client6(), vip6(), 0, 64, &ext);
    assert_eq!(c.classify(&f, &only(key6(Some(40000)))), Verdict::Accept);
    // A fragment header: keyed by client address.
    let mut frag = vec![6, 0, 0, 1, 0, 0, 0, 42];
    frag.extend_from_slice(&tcp);
    let f = v6_frame(client6(), vip6(), 44, 64, &frag);
    assert_eq!(c.classify(&f, &only(key6(None))), Verdict::Accept);
    let mut later = vec![6, 0, 0x05, 0x28, 0, 0, 0, 42];
    later.extend_from_slice(&[0xab; 16]);
    let f = v6_frame(client6(), vip6(), 44, 64, &later);
    assert_eq!(c.classify(&f, &only(key6(None))), Verdict::Accept);
    // No rule.
    assert_eq!(
        c.classify(&v6_frame(client6(), vip6(), 6, 64, &l4(1, 81)), &all()),
        NO_RULE
    );
    // ICMPv6 echo: by client address.
    let f = v6_frame(client6(), vip6(), 58, 64, &[128, 0, 0, 0, 0, 1, 0, 1]);
    assert_eq!(c.classify(&f, &only(key6(None))), Verdict::Accept);
    assert_eq!(c.classify(&f, &all_but(key6(None))), NOT_OWNED);
}

#[test]
fn malformed_ipv6_is_counted() {
    let c = classifier();
    let m = |r| Verdict::Drop(DropReason::Malformed(r));
    let f = v6_frame(client6(), vip6(), 6, 64, &l4(40000, 80));
    assert_eq!(c.classify(&f[..40], &all()), m(Malformed::ShortIpv6));
    assert_eq!(
        c.classify(&f[..f.len() - 2], &all()),
        m(Malformed::TruncatedIpv6)
    );
    // An extension header running past the datagram.
    let f = v6_frame(client6(), vip6(), 0, 64, &[6, 9, 0, 0, 0, 0, 0, 0]);
    assert_eq!(c.classify(&f, &all()), m(Malformed::BadIpv6Extension));
    // A loop of nine hop-by-hop headers.
    let chain: Vec<u8> = (0..9).flat_map(|_| [0u8, 0, 0, 0, 0, 0, 0, 0]).collect();
    let f = v6_frame(client6(), vip6(), 0, 64, &chain);
    assert_eq!(c.classify(&f, &all()), m(Malformed::BadIpv6Extension));
}

#[test]
fn neighbor_solicitation_for_a_vip_is_answered_by_the_responder_only() {
    let c = classifier();
    let f = ns(vip6(), client6(), 255);
    assert_eq!(
        c.classify(&f, &all()),
        Verdict::NdpAdvert {
            ipv6_offset: 14,
            vip: 0
        }
    );
    assert_eq!(
        c.classify(&f, &none()),
        Verdict::Drop(DropReason::NotResponder)
    );
    assert_eq!(
        c.classify(&ns(vip6(), client6(), 64), &all()),
        Verdict::Drop(DropReason::Malformed(Malformed::BadNdp))
    );
    // Solicitations for the node's own address are the kernel's.
    assert_eq!(
        c.classify(&ns("2001:2::11".parse().unwrap(), client6(), 255), &all()),
        Verdict::ToKernel
    );
}

#[test]
fn neighbor_advertisement_is_well_formed() {
    let mut buf = ns(vip6(), client6(), 255);
    buf.resize(200, 0xee);
    let len = reply::ndp_advert_in_place(&mut buf, 14, OWN, vip6(), VMAC6).unwrap();
    let f = &buf[..len];
    assert_eq!(len, 14 + 40 + 32);
    assert_eq!(&f[0..6], &CLIENT_MAC);
    assert_eq!(&f[6..12], &OWN);
    assert_eq!(f[20], 58);
    assert_eq!(f[21], 255, "hop limit 255");
    assert_eq!(&f[22..38], &vip6().octets(), "from the VIP");
    assert_eq!(&f[38..54], &client6().octets(), "to the solicitor");
    assert_eq!(f[54], 136);
    assert_eq!(f[58], 0x60, "solicited and override");
    assert_eq!(&f[62..78], &vip6().octets(), "target");
    assert_eq!(&f[78..80], &[2, 1]);
    assert_eq!(&f[80..86], &VMAC6, "target link-layer address is the vMAC");
    assert!(checksum_ok(f));
    // Duplicate address detection (from ::) is answered to all nodes.
    let mut dad = ns(vip6(), Ipv6Addr::UNSPECIFIED, 255);
    dad.resize(200, 0);
    let len = reply::ndp_advert_in_place(&mut dad, 14, OWN, vip6(), VMAC6).unwrap();
    assert_eq!(&dad[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(dad[58], 0x20);
    assert!(checksum_ok(&dad[..len]));
    // No room: untouched.
    let mut small = ns(vip6(), client6(), 255);
    small.truncate(60);
    let before = small.clone();
    assert_eq!(
        reply::ndp_advert_in_place(&mut small, 14, OWN, vip6(), VMAC6),
        None
    );
    assert_eq!(small, before);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Arbitrary bytes never panic the decision.
    #[test]
    fn arbitrary_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        let c = classifier();
        let _ = c.classify(&frame, &all());
        let _ = c.classify(&frame, &none());
    }

    /// Valid frames with bytes flipped, cut or extended never panic the
    /// decision nor the reply writers.
    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..7,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
        room in 0usize..120,
    ) {
        let c = classifier();
        let mut f = samples()[which].clone();
        for (at, v) in flips {
            let n = f.len();
            f[at % n] = v;
        }
        f.truncate(cut % (f.len() + 1));
        match c.classify(&f, &all()) {
            Verdict::ArpReply { arp_offset, .. } => {
                prop_assert!(reply::arp_reply_in_place(&mut f, usize::from(arp_offset), OWN, VIP4, VMAC4));
            }
            Verdict::NdpAdvert { ipv6_offset, .. } => {
                f.resize(f.len() + room, 0);
                let _ = reply::ndp_advert_in_place(&mut f, usize::from(ipv6_offset), OWN, vip6(), VMAC6);
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// The IPv4 fast path decides as the general parser does, whatever
    /// the header bytes, the length, the table (owned buckets, moves) and
    /// the VIPs (a second VIP, multicast delivery).
    #[test]
    fn fast_path_agrees_with_the_parser(
        which in 0usize..10,
        flips in proptest::collection::vec((0usize..60, any::<u8>()), 0..3),
        cut in 0usize..80,
        extend in 0usize..4,
        modulus in 1u32..5,
        moves in any::<bool>(),
        second_vip in any::<bool>(),
        multicast in any::<bool>(),
    ) {
        let mut c = classifier();
        if second_vip {
            c.vips4.push(second_vip4());
        }
        let mut f = fast_candidates()[which].clone();
        if multicast {
            // Delivery by multicast MAC: the VIP resolves to it.
            if which < 5 {
                let mac = [0x01, 0x00, 0x5e, 0x12, 0x00, 0x64];
                c.vips4[0].mac = mac;
                f[..6].copy_from_slice(&mac);
            } else {
                let mac = [0x33, 0x33, 0, 0, 0x01, 0x00];
                c.vips6[0].mac = mac;
                f[..6].copy_from_slice(&mac);
            }
        }
        if second_vip {
            c.vips6.push(Vip { address: "2001:2::101".parse().unwrap(), mac: [0x02, 0x86, 0, 0, 1, 1] });
        }
        let f = mutated(f, &flips, cut, extend);
        let table = table_of(modulus, moves);
        prop_assert_eq!(c.classify(&f, &table), c.classify_general(&f, &table));
    }
}

#[test]
fn the_fast_path_and_the_parser_agree_on_the_plain_cases() {
    let c = classifier();
    for f in fast_candidates() {
        for table in [all(), none()] {
            assert_eq!(c.classify(&f, &table), c.classify_general(&f, &table));
        }
    }
    // The cases themselves: an owned TCP segment is accepted, another
    // node's dropped, a port without a rule dropped.
    let f = &fast_candidates()[0];
    assert_eq!(c.classify(f, &all()), Verdict::Accept);
    assert_eq!(c.classify(f, &none()), NOT_OWNED);
    assert_eq!(
        c.classify(&fast_candidates()[3], &all()),
        Verdict::Drop(DropReason::NoRule)
    );
}

#[test]
fn moving_buckets_are_decided_flow_by_flow_from_the_tcp_flags() {
    use packet::flows::{FlowId, FlowSet, FlowTracker};
    use std::sync::Arc;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let c = classifier();
    // TCP 7000 is keyed by client IP: the client's bucket moves.
    let b = key4(None).bucket(N);
    let existing = FlowId::new(IpAddr::V4(CLIENT4), 1000, 7000, 6);
    let seed = Some(Arc::new(FlowSet::from([existing])));
    let out = BucketTable::new(2, N, [], false).with_moves([], [b], seed.clone());
    let inn = BucketTable::new(2, N, [], false).with_moves([b], [], seed);
    let mut old = FlowTracker::new(64, 10_000);
    let mut new = FlowTracker::new(64, 10_000);
    let mut both = |frame: &[u8], now: u32| {
        (
            c.classify_tracked(frame, &out, Some((&mut old, now))) == Verdict::Accept,
            c.classify_tracked(frame, &inn, Some((&mut new, now))) == Verdict::Accept,
        )
    };
    // The old owner keeps its connection…
    assert_eq!(both(&tcp_segment(1000, ACK), 0), (true, false));
    // …and, by client-ip affinity, this client's new one too.
    assert_eq!(both(&tcp_segment(1001, SYN), 1), (true, false));
    assert_eq!(both(&tcp_segment(1001, ACK), 2), (true, false));
    // UDP of the moving bucket stays with the old owner.
    assert_eq!(both(&V4::new(17, l4(5000, 9000)).frame(), 3), (true, false));
    // Without the tracker, a bucket out is kept and one in is left.
    assert_eq!(c.classify(&tcp_segment(1002, SYN), &out), Verdict::Accept);
    assert_eq!(c.classify(&tcp_segment(1002, SYN), &inn), NOT_OWNED);
}
