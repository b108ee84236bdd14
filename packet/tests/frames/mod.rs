//! Frames and tables the decision's tests build by hand, shared by the
//! pure tests of `packet` and the XDP pre-filter's tests in `fastpath`
//! (which include this file by path).
#![allow(dead_code)]

use packet::decision::{Affinity, Classifier, DropReason, RuleTable, Transport, Verdict, Vip};
use packet::hash::FlowKey;
use packet::reply;
use packet::table::BucketTable;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const OWN: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xcc];
pub const VMAC4: [u8; 6] = [0x02, 0x48, 198, 18, 0, 100];
pub const VMAC6: [u8; 6] = [0x02, 0x86, 0, 0, 1, 0];
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const NODE4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 7);
pub const N: u32 = 4096;

pub fn vip6() -> Ipv6Addr {
    "2001:2::100".parse().unwrap()
}
pub fn client6() -> Ipv6Addr {
    "2001:2:1::7".parse().unwrap()
}

pub fn classifier() -> Classifier {
    let mut rules = RuleTable::new();
    rules.insert(Transport::Tcp, 80, Affinity::ClientIpPort);
    rules.insert(Transport::Tcp, 7000, Affinity::ClientIp);
    rules.insert(Transport::Udp, 9000, Affinity::ClientIp);
    Classifier {
        own_mac: OWN,
        vips4: vec![Vip {
            address: VIP4,
            mac: VMAC4,
        }],
        vips6: vec![Vip {
            address: vip6(),
            mac: VMAC6,
        }],
        rules,
    }
}

pub fn all() -> BucketTable {
    BucketTable::new(1, N, 0..N, true)
}
pub fn none() -> BucketTable {
    BucketTable::new(1, N, [], false)
}
/// A table owning exactly the bucket of `key`.
pub fn only(key: FlowKey) -> BucketTable {
    BucketTable::new(1, N, [key.bucket(N)], false)
}
pub fn all_but(key: FlowKey) -> BucketTable {
    let b = key.bucket(N);
    BucketTable::new(1, N, (0..N).filter(|x| *x != b), true)
}

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn with_vlans(frame: &[u8], tags: usize) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for i in 0..tags {
        f.extend_from_slice(
            &(if i == 0 && tags > 1 {
                0x88a8u16
            } else {
                0x8100
            })
            .to_be_bytes(),
        );
        f.extend_from_slice(&(10 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

pub fn l4(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = sport.to_be_bytes().to_vec();
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&[0u8; 16]);
    v
}

pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub frag: u16,
    pub options: usize,
    pub payload: Vec<u8>,
}

impl V4 {
    pub fn new(proto: u8, payload: Vec<u8>) -> Self {
        V4 {
            src: CLIENT4,
            dst: VIP4,
            proto,
            frag: 0,
            options: 0,
            payload,
        }
    }
    pub fn bytes(&self) -> Vec<u8> {
        let ihl = 5 + self.options;
        let total = ihl * 4 + self.payload.len();
        let mut h = vec![(4 << 4) | ihl as u8, 0];
        h.extend_from_slice(&(total as u16).to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.extend_from_slice(&[64, self.proto, 0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend(std::iter::repeat_n(1u8, self.options * 4)); // NOP options
        h.extend_from_slice(&self.payload);
        h
    }
    pub fn frame(&self) -> Vec<u8> {
        eth(VMAC4, CLIENT_MAC, 0x0800, &self.bytes())
    }
}

pub fn v6_frame(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    hop_limit: u8,
    ext_and_payload: &[u8],
) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(ext_and_payload.len() as u16).to_be_bytes());
    h.push(next);
    h.push(hop_limit);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(ext_and_payload);
    eth(VMAC6, CLIENT_MAC, 0x86dd, &h)
}

pub fn arp(op: u16, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&CLIENT_MAC);
    a.extend_from_slice(&sender_ip.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target_ip.octets());
    eth([0xff; 6], CLIENT_MAC, 0x0806, &a)
}

pub fn ns(target: Ipv6Addr, src: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&CLIENT_MAC);
    let t = target.octets();
    let solicited: Ipv6Addr = Ipv6Addr::from([
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    let mut f = v6_frame(src, solicited, 58, hop_limit, &icmp);
    f[0..6].copy_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    f
}

pub fn key4(port: Option<u16>) -> FlowKey {
    FlowKey::new(IpAddr::V4(CLIENT4), port)
}
pub fn key6(port: Option<u16>) -> FlowKey {
    FlowKey::new(IpAddr::V6(client6()), port)
}

pub const NOT_OWNED: Verdict = Verdict::Drop(DropReason::NotOwned);
pub const NO_RULE: Verdict = Verdict::Drop(DropReason::NoRule);
pub fn checksum_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let src: [u8; 16] = ip[8..24].try_into().unwrap();
    let dst: [u8; 16] = ip[24..40].try_into().unwrap();
    let msg = &ip[40..];
    // Recomputing over a message with its checksum in place gives 0.
    reply::icmpv6_checksum(&src, &dst, msg) == 0
}

pub fn samples() -> Vec<Vec<u8>> {
    let mut later = V4::new(6, vec![1; 8]);
    later.frag = 3;
    vec![
        V4::new(6, l4(40000, 80)).frame(),
        V4::new(17, l4(40000, 9000)).frame(),
        later.frame(),
        with_vlans(&V4::new(1, vec![8, 0, 0, 0]).frame(), 2),
        arp(1, CLIENT4, VIP4),
        ns(vip6(), client6(), 255),
        v6_frame(
            client6(),
            vip6(),
            0,
            64,
            &[6, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80],
        ),
    ]
}

/// Frames the fast paths may decide: TCP and UDP to the VIPs on ports
/// with and without rules, from several clients (five IPv4, five IPv6).
pub fn fast_candidates() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, (proto, dport)) in [(6, 80), (6, 7000), (17, 9000), (6, 22), (17, 53)]
        .into_iter()
        .enumerate()
    {
        let mut v = V4::new(proto, l4(40000 + i as u16, dport));
        v.src = Ipv4Addr::new(198, 19, i as u8, 7 + i as u8);
        out.push(v.frame());
    }
    for (i, (proto, dport)) in [(6, 80), (6, 7000), (17, 9000), (6, 22), (17, 53)]
        .into_iter()
        .enumerate()
    {
        let client = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, i as u16, 7);
        out.push(v6_frame(
            client,
            vip6(),
            proto,
            64,
            &l4(40000 + i as u16, dport),
        ));
    }
    out
}

/// `f` with bytes `flips` (position modulo the length, value), then cut
/// short at `cut` when it falls around the headers' end (< 60), then
/// padded with `extend` zeros.
pub fn mutated(mut f: Vec<u8>, flips: &[(usize, u8)], cut: usize, extend: usize) -> Vec<u8> {
    for &(at, v) in flips {
        let n = f.len();
        f[at % n] = v;
    }
    if cut < 60 {
        f.truncate(cut);
    }
    f.extend(std::iter::repeat_n(0, extend));
    f
}

/// Another IPv4 VIP of the farm.
pub fn second_vip4() -> Vip<Ipv4Addr> {
    Vip {
        address: Ipv4Addr::new(198, 18, 0, 101),
        mac: [0x02, 0x48, 198, 18, 0, 101],
    }
}

/// A table owning every `modulus`-th bucket; with `moves`, buckets 1 and 2
/// modulo 7 moving in and out.
pub fn table_of(modulus: u32, moves: bool) -> BucketTable {
    let table = BucketTable::new(1, N, (0..N).filter(|b| b % modulus == 0), true);
    if moves {
        table.with_moves(
            (0..N).filter(|b| b % 7 == 1),
            (0..N).filter(|b| b % 7 == 2),
            None,
        )
    } else {
        table
    }
}

/// A TCP segment from `CLIENT4:sport` to the VIP's port 7000 with `flags`.
pub fn tcp_segment(sport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = l4(sport, 7000);
    l4[13] = flags;
    V4::new(6, l4).frame()
}
