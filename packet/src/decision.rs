//! The packet decision of docs/design.md §2, on byte slices: no DPDK types, no IO.

use crate::flows::{FlowId, FlowPacket, FlowTracker, PacketKind};
use crate::hash::FlowKey;
use crate::table::{BucketTable, Move};
use crate::wire::{self, Arp, Ethernet, Ipv4, Ipv6, MacAddr, Malformed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How a rule keys its traffic: the config's type, one for every crate.
pub use config::Affinity;

/// Why a frame was dropped; each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// VIP traffic whose bucket another node owns.
    NotOwned,
    /// VIP traffic to a (protocol, port) without a rule.
    NoRule,
    /// Too short or inconsistent to classify.
    Malformed(Malformed),
    /// Unicast to a MAC that is neither ours nor a VIP's (seen because the
    /// NIC is promiscuous), or a frame we sent ourselves looping back.
    NotForUs,
    /// ARP or neighbor discovery for a VIP that another node answers.
    NotResponder,
}

/// What the fastpath does with one frame. Kept small (offsets as `u16`,
/// VIP indexes as `u8`) so that it is returned in registers: a verdict
/// copied through memory costs a store-forwarding stall per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not VIP traffic: to the kernel, unchanged.
    ToKernel,
    /// VIP traffic of a bucket this node owns: to the kernel, with the
    /// destination MAC rewritten to the node's own (the kernel ignores
    /// frames to the virtual MAC).
    Accept,
    /// An ARP request for VIP number `vip`: answer it from the fastpath.
    ArpReply {
        arp_offset: u16,
        vip: u8,
    },
    /// A neighbor solicitation for IPv6 VIP number `vip`: answer it.
    NdpAdvert {
        ipv6_offset: u16,
        vip: u8,
    },
    Drop(DropReason),
}

/// A VIP and the MAC it resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vip<A> {
    pub address: A,
    pub mac: MacAddr,
}

/// Rules by (protocol, destination port): a direct-mapped table so that the
/// lookup is one load, whatever the number of rules.
#[derive(PartialEq, Eq)]
pub struct RuleTable {
    tcp: Box<[u8; 65536]>,
    udp: Box<[u8; 65536]>,
}

const NO_RULE: u8 = 0;
const RULE_CLIENT_IP: u8 = 1;
const RULE_CLIENT_IP_PORT: u8 = 2;

/// A transport protocol rules apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Default for RuleTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RuleTable {
    pub fn new() -> Self {
        RuleTable {
            tcp: Box::new([NO_RULE; 65536]),
            udp: Box::new([NO_RULE; 65536]),
        }
    }

    pub fn insert(&mut self, transport: Transport, port: u16, affinity: Affinity) {
        let slot = match transport {
            Transport::Tcp => &mut self.tcp[usize::from(port)],
            Transport::Udp => &mut self.udp[usize::from(port)],
        };
        *slot = match affinity {
            Affinity::ClientIp => RULE_CLIENT_IP,
            Affinity::ClientIpPort => RULE_CLIENT_IP_PORT,
        };
    }

    /// The rules of a config (`[[rules]]`).
    pub fn from_config(rules: &[config::Rule]) -> RuleTable {
        let mut table = RuleTable::new();
        for r in rules {
            let t = match r.protocol {
                config::Protocol::Tcp => Transport::Tcp,
                config::Protocol::Udp => Transport::Udp,
            };
            if let Some(port) = r.port {
                table.insert(t, port, r.affinity);
            }
        }
        table
    }

    /// The flow key of a TCP or UDP datagram (not a fragment) from
    /// `client`:`client_port` to a VIP's `vip_port`, by its rule's
    /// affinity, with that affinity; `None`: no rule. The one place where
    /// a rule becomes a key: the decision, the census of the kernel's
    /// connections and the status all go through it.
    #[inline]
    pub fn key(
        &self,
        protocol: u8,
        client: IpAddr,
        client_port: u16,
        vip_port: u16,
    ) -> Option<(FlowKey, Affinity)> {
        Some(match self.lookup(protocol, vip_port)? {
            Affinity::ClientIp => (FlowKey::new(client, None), Affinity::ClientIp),
            Affinity::ClientIpPort => (
                FlowKey::new(client, Some(client_port)),
                Affinity::ClientIpPort,
            ),
        })
    }

    /// The bucket of such a datagram among `n_buckets`; `None`: no rule.
    pub fn bucket(
        &self,
        protocol: u8,
        client: IpAddr,
        client_port: u16,
        vip_port: u16,
        n_buckets: u32,
    ) -> Option<u32> {
        let (key, _) = self.key(protocol, client, client_port, vip_port)?;
        Some(key.bucket(n_buckets))
    }

    #[inline]
    pub fn lookup(&self, protocol: u8, port: u16) -> Option<Affinity> {
        let v = match protocol {
            wire::IPPROTO_TCP => self.tcp[usize::from(port)],
            wire::IPPROTO_UDP => self.udp[usize::from(port)],
            _ => NO_RULE,
        };
        match v {
            RULE_CLIENT_IP => Some(Affinity::ClientIp),
            RULE_CLIENT_IP_PORT => Some(Affinity::ClientIpPort),
            _ => None,
        }
    }
}

/// Everything the decision needs besides the bucket table: fixed for the
/// life of a node.
pub struct Classifier {
    pub own_mac: MacAddr,
    pub vips4: Vec<Vip<Ipv4Addr>>,
    pub vips6: Vec<Vip<Ipv6Addr>>,
    pub rules: RuleTable,
}

const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 135;

impl Classifier {
    #[inline]
    fn vip4(&self, addr: [u8; 4]) -> Option<usize> {
        self.vips4.iter().position(|v| v.address.octets() == addr)
    }

    #[inline]
    fn vip6(&self, addr: &[u8; 16]) -> Option<usize> {
        self.vips6.iter().position(|v| &v.address.octets() == addr)
    }

    /// Every VIP, IPv4 first.
    pub fn vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.vips4.iter().map(|v| IpAddr::V4(v.address));
        v4.chain(self.vips6.iter().map(|v| IpAddr::V6(v.address)))
    }

    /// The MAC of every VIP, IPv4 first.
    pub fn vip_macs(&self) -> impl Iterator<Item = MacAddr> + '_ {
        let v4 = self.vips4.iter().map(|v| v.mac);
        v4.chain(self.vips6.iter().map(|v| v.mac))
    }

    #[inline]
    fn is_vip_mac(&self, mac: &MacAddr) -> bool {
        self.vips4.iter().any(|v| &v.mac == mac) || self.vips6.iter().any(|v| &v.mac == mac)
    }

    /// Decides the fate of one received frame, without flow tracking: a
    /// bucket moving out is kept whole, one moving in is left to its old
    /// owner.
    #[inline]
    pub fn classify(&self, frame: &[u8], table: &BucketTable) -> Verdict {
        self.classify_tracked(frame, table, None)
    }

    /// Decides the fate of one received frame; the packets of moving
    /// buckets are decided flow by flow by `flows` (an lcore's tracker and
    /// the time in milliseconds).
    #[inline(always)]
    pub fn classify_tracked(
        &self,
        frame: &[u8],
        table: &BucketTable,
        flows: Option<(&mut FlowTracker, u32)>,
    ) -> Verdict {
        match self.classify_inner(frame, table, flows) {
            Ok(v) => v,
            Err(m) => Verdict::Drop(DropReason::Malformed(m)),
        }
    }

    #[inline(always)]
    fn classify_inner(
        &self,
        frame: &[u8],
        table: &BucketTable,
        flows: Option<(&mut FlowTracker, u32)>,
    ) -> Result<Verdict, Malformed> {
        let fast = match frame.get(12..14) {
            Some([0x08, 0x00]) => self.ipv4_fast(frame, table),
            Some([0x86, 0xdd]) => self.ipv6_fast(frame, table),
            _ => None,
        };
        match fast {
            Some(v) => Ok(v),
            None => self.parse_and_classify(frame, table, flows),
        }
    }

    /// The decision of the general parser alone, without the IPv4 fast
    /// path: the reference the fast path is tested against.
    pub fn classify_general(&self, frame: &[u8], table: &BucketTable) -> Verdict {
        match self.parse_and_classify(frame, table, None) {
            Ok(v) => v,
            Err(m) => Verdict::Drop(DropReason::Malformed(m)),
        }
    }

    /// Every frame, layer by layer: VLAN tags, ARP, IPv4 options and
    /// fragments, IPv6 extension headers, neighbor discovery, moves.
    #[inline(always)]
    fn parse_and_classify(
        &self,
        frame: &[u8],
        table: &BucketTable,
        flows: Option<(&mut FlowTracker, u32)>,
    ) -> Result<Verdict, Malformed> {
        let eth = Ethernet::parse(frame)?;
        if eth.src == self.own_mac {
            return Ok(Verdict::Drop(DropReason::NotForUs));
        }
        if !wire::is_multicast_mac(&eth.dst)
            && eth.dst != self.own_mac
            && !self.is_vip_mac(&eth.dst)
        {
            return Ok(Verdict::Drop(DropReason::NotForUs));
        }
        let l3 = frame.get(eth.l3_offset..).unwrap_or_default();
        match eth.ethertype {
            wire::ETHERTYPE_ARP => self.arp(l3, eth.l3_offset, table),
            wire::ETHERTYPE_IPV4 => self.ipv4(l3, table, flows),
            wire::ETHERTYPE_IPV6 => self.ipv6(l3, eth.l3_offset, table, flows),
            _ => Ok(Verdict::ToKernel),
        }
    }

    /// The common case, decided at fixed offsets after one length check:
    /// an untagged IPv4 TCP or UDP datagram without options, not a
    /// fragment, to a VIP's MAC and address, of a table without moves.
    /// `None` for anything else, which the general parser decides. Where
    /// it answers, it answers as the general parser does (property test
    /// `fast_path_agrees_with_the_parser`); the general path's layered
    /// parse costs a fifth of the lcore's time per packet at line rate.
    #[inline(always)]
    fn ipv4_fast(&self, frame: &[u8], table: &BucketTable) -> Option<Verdict> {
        const L3: usize = wire::ETH_HEADER_LEN;
        // Ethernet, an option-less IPv4 header and the two ports.
        let h: &[u8; L3 + 24] = frame.get(..L3 + 24)?.try_into().ok()?;
        let ethertype = u16::from_be_bytes([h[12], h[13]]);
        let total_len = usize::from(u16::from_be_bytes([h[L3 + 2], h[L3 + 3]]));
        let fragment = u16::from_be_bytes([h[L3 + 6], h[L3 + 7]]) & 0x3fff;
        let protocol = h[L3 + 9];
        if ethertype != wire::ETHERTYPE_IPV4
            || h[L3] != 0x45
            || fragment != 0
            || total_len < 24
            || total_len > frame.len() - L3
            || (protocol != wire::IPPROTO_TCP && protocol != wire::IPPROTO_UDP)
        {
            return None;
        }
        let dst_mac: &MacAddr = h[..6].try_into().ok()?;
        let src_mac: &MacAddr = h[6..12].try_into().ok()?;
        let dst: [u8; 4] = h[L3 + 16..L3 + 20].try_into().ok()?;
        if *src_mac == self.own_mac || !self.is_vip_mac(dst_mac) || self.vip4(dst).is_none() {
            return None;
        }
        let client: [u8; 4] = h[L3 + 12..L3 + 16].try_into().ok()?;
        let ports = [h[L3 + 20], h[L3 + 21], h[L3 + 22], h[L3 + 23]];
        self.fast_verdict(table, protocol, ports, |port| FlowKey::V4 { client, port })
    }

    /// The same for IPv6: an untagged datagram whose first header is TCP
    /// or UDP (no extension header), to a VIP's MAC and address, of a
    /// table without moves. `None` for anything else.
    #[inline(always)]
    fn ipv6_fast(&self, frame: &[u8], table: &BucketTable) -> Option<Verdict> {
        const L3: usize = wire::ETH_HEADER_LEN;
        const L4: usize = L3 + wire::IPV6_HEADER_LEN;
        let h: &[u8; L4 + 4] = frame.get(..L4 + 4)?.try_into().ok()?;
        let ethertype = u16::from_be_bytes([h[12], h[13]]);
        let payload_len = usize::from(u16::from_be_bytes([h[L3 + 4], h[L3 + 5]]));
        let protocol = h[L3 + 6];
        if ethertype != wire::ETHERTYPE_IPV6
            || h[L3] >> 4 != 6
            || payload_len < 4
            || payload_len > frame.len() - L4
            || (protocol != wire::IPPROTO_TCP && protocol != wire::IPPROTO_UDP)
        {
            return None;
        }
        let dst_mac: &MacAddr = h[..6].try_into().ok()?;
        let src_mac: &MacAddr = h[6..12].try_into().ok()?;
        let dst: &[u8; 16] = h[L3 + 24..L3 + 40].try_into().ok()?;
        if *src_mac == self.own_mac || !self.is_vip_mac(dst_mac) || self.vip6(dst).is_none() {
            return None;
        }
        let client: [u8; 16] = h[L3 + 8..L3 + 24].try_into().ok()?;
        let ports = [h[L4], h[L4 + 1], h[L4 + 2], h[L4 + 3]];
        self.fast_verdict(table, protocol, ports, |port| FlowKey::V6 { client, port })
    }

    /// The fast paths' end: the rule of (protocol, destination port), the
    /// key by its affinity (`key` of the client port or none), the bucket.
    /// `ports` is the TCP/UDP header's first four bytes.
    #[inline(always)]
    fn fast_verdict(
        &self,
        table: &BucketTable,
        protocol: u8,
        ports: [u8; 4],
        key: impl FnOnce(Option<u16>) -> FlowKey,
    ) -> Option<Verdict> {
        let sport = u16::from_be_bytes([ports[0], ports[1]]);
        let dport = u16::from_be_bytes([ports[2], ports[3]]);
        let port = match self.rules.lookup(protocol, dport) {
            None => return Some(Verdict::Drop(DropReason::NoRule)),
            Some(Affinity::ClientIpPort) => Some(sport),
            Some(Affinity::ClientIp) => None,
        };
        let bucket = key(port).bucket(table.n_buckets());
        if table.owns(bucket) {
            Some(Verdict::Accept)
        } else if table.has_moves() {
            None
        } else {
            Some(Verdict::Drop(DropReason::NotOwned))
        }
    }

    fn arp(&self, l3: &[u8], offset: usize, table: &BucketTable) -> Result<Verdict, Malformed> {
        let arp = Arp::parse(l3)?;
        let Some(vip) = self.vip4(arp.target_ip) else {
            return Ok(Verdict::ToKernel);
        };
        // Only requests are answered; a reply or announcement about a VIP
        // never reaches the kernel, which must not learn the VIP elsewhere.
        if arp.operation == wire::ARP_REQUEST && table.is_arp_responder() {
            Ok(Verdict::ArpReply {
                arp_offset: offset as u16,
                vip: vip as u8,
            })
        } else {
            Ok(Verdict::Drop(DropReason::NotResponder))
        }
    }

    #[inline(always)]
    fn ipv4(
        &self,
        l3: &[u8],
        table: &BucketTable,
        flows: Option<(&mut FlowTracker, u32)>,
    ) -> Result<Verdict, Malformed> {
        let ip = Ipv4::parse(l3)?;
        if self.vip4(ip.dst).is_none() {
            return Ok(Verdict::ToKernel);
        }
        let datagram = Datagram {
            client: std::net::IpAddr::V4(Ipv4Addr::from(ip.src)),
            protocol: ip.protocol,
            icmp: wire::IPPROTO_ICMP,
            is_fragment: ip.is_fragment,
            is_later_fragment: ip.is_later_fragment,
            l4_offset: ip.header_len,
            end: ip.total_len,
        };
        self.vip_verdict(l3, &datagram, table, flows)
    }

    fn ipv6(
        &self,
        l3: &[u8],
        offset: usize,
        table: &BucketTable,
        flows: Option<(&mut FlowTracker, u32)>,
    ) -> Result<Verdict, Malformed> {
        let ip = Ipv6::parse(l3)?;
        // Neighbor solicitations go to a solicited-node multicast address,
        // so they are recognised by their target, not their destination.
        if ip.protocol == wire::IPPROTO_ICMPV6
            && l3.get(ip.upper_offset) == Some(&ICMPV6_NEIGHBOR_SOLICITATION)
        {
            let target = wire::array::<16>(l3, ip.upper_offset + 8).ok_or(Malformed::BadNdp)?;
            if ip.upper_offset + 24 > ip.end {
                return Err(Malformed::BadNdp);
            }
            if let Some(vip) = self.vip6(&target) {
                // RFC 4861 §7.1.1: a solicitation that crossed a router is invalid.
                if ip.hop_limit != 255 {
                    return Err(Malformed::BadNdp);
                }
                return Ok(if table.is_arp_responder() {
                    Verdict::NdpAdvert {
                        ipv6_offset: offset as u16,
                        vip: vip as u8,
                    }
                } else {
                    Verdict::Drop(DropReason::NotResponder)
                });
            }
        }
        if self.vip6(&ip.dst).is_none() {
            return Ok(Verdict::ToKernel);
        }
        let datagram = Datagram {
            client: std::net::IpAddr::V6(Ipv6Addr::from(ip.src)),
            protocol: ip.protocol,
            icmp: wire::IPPROTO_ICMPV6,
            is_fragment: ip.is_fragment,
            is_later_fragment: ip.is_later_fragment,
            l4_offset: ip.upper_offset,
            end: ip.end,
        };
        self.vip_verdict(l3, &datagram, table, flows)
    }

    /// Keys a datagram to a VIP by its rule's affinity and checks ownership.
    /// Fragments are keyed by client IP so that all fragments of a datagram
    /// land on one node; ICMP is keyed by client IP so a ping gets one reply.
    #[inline(always)]
    fn vip_verdict(
        &self,
        l3: &[u8],
        d: &Datagram,
        table: &BucketTable,
        flows: Option<(&mut FlowTracker, u32)>,
    ) -> Result<Verdict, Malformed> {
        let mut ports = (0, 0);
        let mut affinity = Affinity::ClientIp;
        let key = if d.is_later_fragment || d.protocol == d.icmp {
            FlowKey::new(d.client, None)
        } else if d.protocol == wire::IPPROTO_TCP || d.protocol == wire::IPPROTO_UDP {
            let (sport, dport) = wire::ports(l3, d.l4_offset, d.end)?;
            ports = (sport, dport);
            match self.rules.key(d.protocol, d.client, sport, dport) {
                None => return Ok(Verdict::Drop(DropReason::NoRule)),
                // A first fragment is keyed like the later ones, by client
                // IP: all of a datagram's fragments land on one node.
                Some(_) if d.is_fragment => FlowKey::new(d.client, None),
                Some((key, a)) => {
                    affinity = a;
                    key
                }
            }
        } else {
            return Ok(Verdict::Drop(DropReason::NoRule));
        };
        let bucket = key.bucket(table.n_buckets());
        if table.owns(bucket) {
            return Ok(Verdict::Accept);
        }
        let accept =
            table.has_moves() && Self::moving_accepts(l3, d, ports, affinity, bucket, table, flows);
        Ok(if accept {
            Verdict::Accept
        } else {
            Verdict::Drop(DropReason::NotOwned)
        })
    }

    /// Whether this node takes a packet of a bucket it does not own,
    /// while buckets move. Out of line: only packets of a table with
    /// moves get here, and the hot path stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn moving_accepts(
        l3: &[u8],
        d: &Datagram,
        ports: (u16, u16),
        affinity: Affinity,
        bucket: u32,
        table: &BucketTable,
        flows: Option<(&mut FlowTracker, u32)>,
    ) -> bool {
        match table.moving(bucket) {
            None => false,
            Some(m) => match flows {
                None => m == Move::Out,
                Some((tracker, now_ms)) => {
                    let p = Self::flow_packet(l3, d, ports, affinity, bucket);
                    tracker.decide(now_ms, m, table.seed(), &p)
                }
            },
        }
    }

    /// What flow tracking needs of a packet of a moving bucket.
    fn flow_packet(
        l3: &[u8],
        d: &Datagram,
        (sport, dport): (u16, u16),
        affinity: Affinity,
        bucket: u32,
    ) -> FlowPacket {
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        let kind = if d.is_fragment || d.protocol != wire::IPPROTO_TCP {
            PacketKind::Connectionless
        } else {
            match l3.get(d.l4_offset + 13) {
                Some(f) if f & (SYN | ACK) == SYN => PacketKind::Syn,
                _ => PacketKind::Tcp,
            }
        };
        FlowPacket {
            id: FlowId::new(d.client, sport, dport, d.protocol),
            bucket,
            kind,
            client_affinity: affinity == Affinity::ClientIp,
        }
    }
}

/// What the keying needs of an IPv4 or IPv6 datagram to a VIP.
struct Datagram {
    client: std::net::IpAddr,
    protocol: u8,
    /// ICMP's protocol number in this IP version.
    icmp: u8,
    is_fragment: bool,
    is_later_fragment: bool,
    l4_offset: usize,
    end: usize,
}
