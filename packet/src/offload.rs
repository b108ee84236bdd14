//! Offloads across the kernel boundary, on byte slices: the virtio-net
//! header that a TAP opened with `IFF_VNET_HDR` puts before each frame,
//! completing a checksum the kernel left partial, and cutting a large TCP
//! segment the kernel handed over (TSO) into frames of at most one MSS.
//!
//! The kernel sends a node's replies as TCP segments of up to 64 KiB with
//! the checksum left to "hardware". Taking them whole costs one read per
//! 64 KiB instead of one per frame; the fastpath then does what a NIC's TSO
//! would: every frame gets the headers, its slice of the payload, a fresh
//! IP length/ID and TCP sequence number, and a complete checksum.

/// Bytes of the header before each frame (`virtio_net_hdr_v1`, the size
/// set with `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 12;

/// `flags`: the checksum from `csum_start` to the end is to be filled in
/// at `csum_start + csum_offset` (the field holds the pseudo-header sum).
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
/// Or-ed into `gso_type`: the segment carries ECN's CWR.
pub const GSO_ECN: u8 = 0x80;

/// A decoded virtio-net header (little-endian on the wire: the TAP uses
/// the host's order, and Herd runs on little-endian hosts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// Why a frame from the kernel could not be sent on (counted, dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadError {
    /// The checksum position lies outside the frame.
    BadChecksumOffsets,
    /// A GSO frame that is not Ethernet + IPv4/IPv6 + TCP as announced.
    BadGsoFrame,
    /// A GSO type other than TCP over IPv4/IPv6.
    UnsupportedGso,
}

/// The ones' complement sum of `data` read as big-endian 16-bit words
/// (an odd last byte is the high byte of a word), added to `acc`, not
/// folded. Eight bytes per step: the per-byte loop costs about four times
/// as much, and this sum runs over every byte a node serves.
#[inline]
pub fn sum_be(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Two 32-bit halves into 64 bits: no carry is lost before 2^32 steps.
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (not inverted).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Fills in the checksum a frame with [`F_NEEDS_CSUM`] left partial: the
/// sum from `csum_start` to the end, inverted, at `csum_start +
/// csum_offset` (the field already holds the pseudo-header's sum).
pub fn complete_checksum(frame: &mut [u8], hdr: &VnetHdr) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > frame.len() || start > frame.len() {
        return Err(OffloadError::BadChecksumOffsets);
    }
    let sum = !fold(sum_be(&frame[start..], 0));
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

use crate::wire::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, IPPROTO_TCP};

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// A large TCP segment from the kernel and how it is cut: frame `i` of
/// [`count`](Segmenter::count) is the headers followed by the `i`-th
/// `mss` bytes of the payload.
#[derive(Clone, Debug)]
pub struct Segmenter<'a> {
    frame: &'a [u8],
    l3: usize,
    l4: usize,
    /// Ethernet + IP + TCP headers (TCP options included).
    headers: usize,
    mss: usize,
    ipv4: bool,
}

impl<'a> Segmenter<'a> {
    /// Checks a GSO frame (`hdr.gso_type` TCPv4 or TCPv6) and prepares to
    /// cut it. The headers are found by parsing, not trusted from `hdr`.
    pub fn new(frame: &'a [u8], hdr: &VnetHdr) -> Result<Segmenter<'a>, OffloadError> {
        let ipv4 = match hdr.gso_type & !GSO_ECN {
            GSO_TCPV4 => true,
            GSO_TCPV6 => false,
            _ => return Err(OffloadError::UnsupportedGso),
        };
        let bad = OffloadError::BadGsoFrame;
        let be16 = |i: usize| -> Result<u16, OffloadError> {
            frame
                .get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or(bad)
        };
        let mut l3 = 14;
        let mut ethertype = be16(12)?;
        while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            ethertype = be16(l3 + 2)?;
            l3 += 4;
            if l3 > 22 {
                return Err(bad);
            }
        }
        let l4 = match (ipv4, ethertype) {
            (true, ETHERTYPE_IPV4) => {
                let vihl = *frame.get(l3).ok_or(bad)?;
                let ihl = usize::from(vihl & 0x0f) * 4;
                if vihl >> 4 != 4 || ihl < 20 || frame.get(l3 + 9) != Some(&IPPROTO_TCP) {
                    return Err(bad);
                }
                l3 + ihl
            }
            // The kernel's TSO frames carry no IPv6 extension headers
            // before TCP: next header must be TCP.
            (false, ETHERTYPE_IPV6) if frame.get(l3 + 6) == Some(&IPPROTO_TCP) => l3 + 40,
            _ => return Err(bad),
        };
        let tcp_len = usize::from(*frame.get(l4 + 12).ok_or(bad)? >> 4) * 4;
        let headers = l4 + tcp_len;
        let mss = usize::from(hdr.gso_size);
        if tcp_len < 20 || headers > frame.len() || mss == 0 {
            return Err(bad);
        }
        Ok(Segmenter {
            frame,
            l3,
            l4,
            headers,
            mss,
            ipv4,
        })
    }

    fn payload(&self) -> usize {
        self.frame.len() - self.headers
    }

    /// How many frames the segment becomes (at least one).
    pub fn count(&self) -> usize {
        self.payload().div_ceil(self.mss).max(1)
    }

    /// The length of frame `i`.
    pub fn frame_len(&self, i: usize) -> usize {
        let start = i * self.mss;
        self.headers + self.payload().saturating_sub(start).min(self.mss)
    }

    /// Writes frame `i` into `out` with complete IP and TCP checksums;
    /// returns its length, or `None` if `out` is too short.
    pub fn write(&self, i: usize, out: &mut [u8]) -> Option<usize> {
        let len = self.frame_len(i);
        let out = out.get_mut(..len)?;
        let (h, l3, l4) = (self.headers, self.l3, self.l4);
        out[..h].copy_from_slice(&self.frame[..h]);
        let start = h + i * self.mss;
        out[h..].copy_from_slice(&self.frame[start..start + (len - h)]);
        let last = i + 1 == self.count();

        let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]])
            .wrapping_add((i * self.mss) as u32);
        out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        // FIN and PSH end the whole segment: only its last frame has them;
        // CWR is sent once, on the first.
        let mut clear = 0;
        if !last {
            clear |= TCP_FIN | TCP_PSH;
        }
        if i > 0 {
            clear |= TCP_CWR;
        }
        out[l4 + 13] &= !clear;

        let tcp_len = len - l4;
        let mut pseudo: u64;
        if self.ipv4 {
            let total = (len - l3) as u16;
            out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            let id = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]).wrapping_add(i as u16);
            out[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
            out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let ip_sum = !fold(sum_be(&out[l3..l4], 0));
            out[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());
            pseudo = sum_be(&out[l3 + 12..l3 + 20], 0);
        } else {
            let payload_len = (len - l3 - 40) as u16;
            out[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
            pseudo = sum_be(&out[l3 + 8..l3 + 40], 0);
        }
        pseudo += 6 + tcp_len as u64;
        out[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let tcp_sum = !fold(sum_be(&out[l4..], pseudo));
        out[l4 + 16..l4 + 18].copy_from_slice(&tcp_sum.to_be_bytes());
        Some(len)
    }
}

pub mod gro;

#[cfg(test)]
mod tests;
