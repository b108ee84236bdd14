//! ARP replies and neighbor advertisements for the VIPs, written in place
//! over the request that asked for them.

use crate::offload::{fold, sum_be};
use crate::wire::{self, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Turns the ARP request at `arp_offset` of `frame` into the reply that
/// resolves `vip` to `vip_mac`. The Ethernet source is the node's own MAC:
/// the virtual MAC is never a source address, so switches keep flooding it.
/// Returns `false` (frame untouched) if the frame is too short.
pub fn arp_reply_in_place(
    frame: &mut [u8],
    arp_offset: usize,
    own_mac: MacAddr,
    vip: Ipv4Addr,
    vip_mac: MacAddr,
) -> bool {
    if frame.len() < arp_offset + wire::ARP_IPV4_LEN {
        return false;
    }
    let (eth, arp) = frame.split_at_mut(arp_offset);
    let requester_mac: MacAddr = arp[8..14].try_into().expect("6 bytes");
    let requester_ip: [u8; 4] = arp[14..18].try_into().expect("4 bytes");
    eth[0..6].copy_from_slice(&requester_mac);
    eth[6..12].copy_from_slice(&own_mac);
    arp[6..8].copy_from_slice(&wire::ARP_REPLY.to_be_bytes());
    arp[8..14].copy_from_slice(&vip_mac);
    arp[14..18].copy_from_slice(&vip.octets());
    arp[18..24].copy_from_slice(&requester_mac);
    arp[24..28].copy_from_slice(&requester_ip);
    true
}

/// Length of a neighbor advertisement with a target link-layer address
/// option, from the IPv6 header on.
pub const NDP_ADVERT_LEN: usize = wire::IPV6_HEADER_LEN + 24 + 8;

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Overwrites the neighbor solicitation whose IPv6 header is at
/// `ipv6_offset` with the advertisement of `vip` at `vip_mac`. `frame` must
/// have room for `ipv6_offset + NDP_ADVERT_LEN` bytes. Returns the new frame
/// length, or `None` (frame untouched) if there is no room.
pub fn ndp_advert_in_place(
    frame: &mut [u8],
    ipv6_offset: usize,
    own_mac: MacAddr,
    vip: Ipv6Addr,
    vip_mac: MacAddr,
) -> Option<usize> {
    let total = ipv6_offset + NDP_ADVERT_LEN;
    if frame.len() < total || frame.len() < ipv6_offset + wire::IPV6_HEADER_LEN {
        return None;
    }
    let solicitor_mac: MacAddr = frame[6..12].try_into().ok()?;
    let solicitor_ip: [u8; 16] = frame[ipv6_offset + 8..ipv6_offset + 24].try_into().ok()?;
    // A solicitation from the unspecified address (duplicate address
    // detection) is answered to all nodes, unsolicited (RFC 4861 §7.2.4).
    let (dst_ip, dst_mac, solicited) = if solicitor_ip == [0; 16] {
        (ALL_NODES, [0x33, 0x33, 0, 0, 0, 1], false)
    } else {
        (Ipv6Addr::from(solicitor_ip), solicitor_mac, true)
    };
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&own_mac);

    let ip = &mut frame[ipv6_offset..total];
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&((24u16 + 8).to_be_bytes()));
    ip[6] = wire::IPPROTO_ICMPV6;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&vip.octets());
    ip[24..40].copy_from_slice(&dst_ip.octets());
    let icmp = &mut ip[40..];
    icmp[0] = 136; // neighbor advertisement
    icmp[1] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    // Override is set: the VIP's MAC is authoritative wherever it is cached.
    icmp[4] = if solicited { 0x60 } else { 0x20 };
    icmp[5..8].copy_from_slice(&[0, 0, 0]);
    icmp[8..24].copy_from_slice(&vip.octets());
    icmp[24] = 2; // target link-layer address option
    icmp[25] = 1; // length in units of 8 bytes
    icmp[26..32].copy_from_slice(&vip_mac);
    let sum = icmpv6_checksum(&vip.octets(), &dst_ip.octets(), icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(total)
}

/// The ICMPv6 checksum over the pseudo-header and `msg` (whose checksum
/// field must be zero).
pub fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], msg: &[u8]) -> u16 {
    let mut sum = sum_be(src, 0);
    sum = sum_be(dst, sum);
    sum = sum_be(&(msg.len() as u32).to_be_bytes(), sum);
    sum = sum_be(&[0, 0, 0, wire::IPPROTO_ICMPV6], sum);
    !fold(sum_be(msg, sum))
}
