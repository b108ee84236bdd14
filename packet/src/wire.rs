//! Zero-copy reads of the headers the packet decision needs.
//!
//! Every accessor is bounds-checked (`slice::get`), so no input can make the
//! parser panic or read out of bounds; a frame too short for what it claims
//! is reported as [`Malformed`].

use std::fmt;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const ETH_HEADER_LEN: usize = 14;
pub const ARP_IPV4_LEN: usize = 28;
pub const IPV6_HEADER_LEN: usize = 40;
/// More VLAN tags than this (802.1Q inside 802.1ad) is treated as malformed.
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before the frame is called malformed.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// A frame too short or inconsistent for the headers it announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    ShortEthernet,
    TooManyVlanTags,
    ShortArp,
    BadArp,
    ShortIpv4,
    BadIpv4Header,
    TruncatedIpv4,
    ShortIpv6,
    BadIpv6Header,
    TruncatedIpv6,
    BadIpv6Extension,
    ShortL4,
    BadNdp,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

pub type MacAddr = [u8; 6];

pub const BROADCAST_MAC: MacAddr = [0xff; 6];

#[inline]
pub fn is_multicast_mac(mac: &[u8]) -> bool {
    mac.first().is_some_and(|b| b & 1 == 1)
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

#[inline]
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// The Ethernet header, with up to [`MAX_VLAN_TAGS`] VLAN tags skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ethernet {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
    /// Offset of the layer-3 header.
    pub l3_offset: usize,
}

impl Ethernet {
    pub fn parse(frame: &[u8]) -> Result<Self, Malformed> {
        let dst = array::<6>(frame, 0).ok_or(Malformed::ShortEthernet)?;
        let src = array::<6>(frame, 6).ok_or(Malformed::ShortEthernet)?;
        let mut ethertype = be16(frame, 12).ok_or(Malformed::ShortEthernet)?;
        let mut offset = ETH_HEADER_LEN;
        let mut tags = 0;
        while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            tags += 1;
            if tags > MAX_VLAN_TAGS {
                return Err(Malformed::TooManyVlanTags);
            }
            ethertype = be16(frame, offset + 2).ok_or(Malformed::ShortEthernet)?;
            offset += 4;
        }
        Ok(Ethernet {
            dst,
            src,
            ethertype,
            l3_offset: offset,
        })
    }
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub operation: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: [u8; 4],
    pub target_ip: [u8; 4],
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

impl Arp {
    pub fn parse(l3: &[u8]) -> Result<Self, Malformed> {
        if l3.len() < ARP_IPV4_LEN {
            return Err(Malformed::ShortArp);
        }
        let htype = be16(l3, 0).ok_or(Malformed::ShortArp)?;
        let ptype = be16(l3, 2).ok_or(Malformed::ShortArp)?;
        if htype != 1 || ptype != ETHERTYPE_IPV4 || l3[4] != 6 || l3[5] != 4 {
            return Err(Malformed::BadArp);
        }
        Ok(Arp {
            operation: be16(l3, 6).ok_or(Malformed::ShortArp)?,
            sender_mac: array(l3, 8).ok_or(Malformed::ShortArp)?,
            sender_ip: array(l3, 14).ok_or(Malformed::ShortArp)?,
            target_ip: array(l3, 24).ok_or(Malformed::ShortArp)?,
        })
    }
}

/// The fields of an IPv4 header the decision reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub protocol: u8,
    /// More-fragments flag set or fragment offset > 0.
    pub is_fragment: bool,
    /// Fragment offset > 0: no layer-4 header in this fragment.
    pub is_later_fragment: bool,
    pub header_len: usize,
    pub total_len: usize,
}

impl Ipv4 {
    pub fn parse(l3: &[u8]) -> Result<Self, Malformed> {
        let first = *l3.first().ok_or(Malformed::ShortIpv4)?;
        if l3.len() < 20 {
            return Err(Malformed::ShortIpv4);
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header_len < 20 {
            return Err(Malformed::BadIpv4Header);
        }
        let total_len = usize::from(be16(l3, 2).ok_or(Malformed::ShortIpv4)?);
        if total_len < header_len {
            return Err(Malformed::BadIpv4Header);
        }
        // Ethernet padding may follow the datagram, a cut datagram may not.
        if total_len > l3.len() {
            return Err(Malformed::TruncatedIpv4);
        }
        let frag = be16(l3, 6).ok_or(Malformed::ShortIpv4)?;
        let offset = frag & 0x1fff;
        let more = frag & 0x2000 != 0;
        Ok(Ipv4 {
            src: array(l3, 12).ok_or(Malformed::ShortIpv4)?,
            dst: array(l3, 16).ok_or(Malformed::ShortIpv4)?,
            protocol: l3[9],
            is_fragment: more || offset > 0,
            is_later_fragment: offset > 0,
            header_len,
            total_len,
        })
    }
}

/// The fields of an IPv6 header, after its extension headers, that the
/// decision reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub hop_limit: u8,
    /// The upper-layer protocol after the extension headers.
    pub protocol: u8,
    pub is_fragment: bool,
    pub is_later_fragment: bool,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub upper_offset: usize,
    /// End of the datagram from the start of the IPv6 header.
    pub end: usize,
}

const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AUTH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;
const EXT_MOBILITY: u8 = 135;

impl Ipv6 {
    pub fn parse(l3: &[u8]) -> Result<Self, Malformed> {
        if l3.len() < IPV6_HEADER_LEN {
            return Err(Malformed::ShortIpv6);
        }
        if l3[0] >> 4 != 6 {
            return Err(Malformed::BadIpv6Header);
        }
        let payload_len = usize::from(be16(l3, 4).ok_or(Malformed::ShortIpv6)?);
        let end = IPV6_HEADER_LEN + payload_len;
        if end > l3.len() {
            return Err(Malformed::TruncatedIpv6);
        }
        let mut next = l3[6];
        let mut offset = IPV6_HEADER_LEN;
        let mut is_fragment = false;
        let mut is_later_fragment = false;
        let mut walked = 0;
        loop {
            let len = match next {
                EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS | EXT_MOBILITY => {
                    let b = l3.get(offset + 1).ok_or(Malformed::BadIpv6Extension)?;
                    (usize::from(*b) + 1) * 8
                }
                EXT_AUTH => {
                    let b = l3.get(offset + 1).ok_or(Malformed::BadIpv6Extension)?;
                    (usize::from(*b) + 2) * 4
                }
                EXT_FRAGMENT => {
                    let frag = be16(l3, offset + 2).ok_or(Malformed::BadIpv6Extension)?;
                    is_fragment = true;
                    is_later_fragment |= frag >> 3 != 0;
                    8
                }
                _ => break,
            };
            walked += 1;
            if walked > MAX_IPV6_EXT_HEADERS || offset + len > end {
                return Err(Malformed::BadIpv6Extension);
            }
            next = l3[offset];
            offset += len;
        }
        Ok(Ipv6 {
            src: array(l3, 8).ok_or(Malformed::ShortIpv6)?,
            dst: array(l3, 24).ok_or(Malformed::ShortIpv6)?,
            hop_limit: l3[7],
            protocol: next,
            is_fragment,
            is_later_fragment,
            upper_offset: offset,
            end,
        })
    }
}

/// Source and destination port of a TCP or UDP header at `at`, if the
/// datagram (ending at `end`) holds them.
#[inline]
pub fn ports(l3: &[u8], at: usize, end: usize) -> Result<(u16, u16), Malformed> {
    if at + 4 > end {
        return Err(Malformed::ShortL4);
    }
    let src = be16(l3, at).ok_or(Malformed::ShortL4)?;
    let dst = be16(l3, at + 2).ok_or(Malformed::ShortL4)?;
    Ok((src, dst))
}
