//! Synthetic traffic for the benchmarks, written as a classic pcap file.
//!
//! The file format (a 24-byte header, then a 16-byte header per frame) is
//! written directly: it is a dozen lines, and the frames are built here
//! anyway.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `n` TCP SYN frames to `vip`:`port` from distinct clients with distinct
/// ports: of 198.19.0.0/16 (64 bytes on the wire, 60 + FCS) or, to an IPv6
/// VIP, of 2001:2:1::/64 (78 bytes).
pub fn syn_flows(n: u32, vip: IpAddr, vmac: [u8; 6], port: u16) -> Vec<Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: reproducible, good enough to spread flows.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..n)
        .map(|_| {
            let r = next();
            let sport = 1024 + ((r >> 32) as u16 % 60000);
            match vip {
                IpAddr::V4(vip) => {
                    let src = Ipv4Addr::from(0xc613_0000 | (r as u32 & 0xffff));
                    tcp_frame(src, sport, vip, port, vmac, TCP_SYN)
                }
                IpAddr::V6(vip) => {
                    let src = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, (r >> 16) as u16, r as u16);
                    tcp_frame6(src, sport, vip, port, vmac, TCP_SYN)
                }
            }
        })
        .collect()
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// A 60-byte TCP segment (no payload) with `flags`, to the virtual MAC.
pub fn tcp_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    vmac: [u8; 6],
    flags: u8,
) -> Vec<u8> {
    let mut f = ethernet(vmac, [0x08, 0x00], 60);
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    push_tcp(&mut f, sport, dport, flags);
    f.resize(60, 0);
    f
}

/// The same segment over IPv6 (74 bytes; the checksum is left 0, which
/// neither Herd's decision nor testpmd's forwarding reads).
pub fn tcp_frame6(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    vmac: [u8; 6],
    flags: u8,
) -> Vec<u8> {
    let mut f = ethernet(vmac, [0x86, 0xdd], 74);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    push_tcp(&mut f, sport, dport, flags);
    f
}

/// An Ethernet header from the lab client's MAC to `vmac`.
fn ethernet(vmac: [u8; 6], ethertype: [u8; 2], capacity: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(capacity);
    f.extend_from_slice(&vmac);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xcc]);
    f.extend_from_slice(&ethertype);
    f
}

/// A 20-byte TCP header (sequence 1, no options, checksum 0).
fn push_tcp(f: &mut Vec<u8>, sport: u16, dport: u16, flags: u8) {
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
}

/// The Internet checksum of `b` (RFC 1071).
pub(crate) fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

pub fn write(path: &std::path::Path, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    // Magic, version 2.4, zone 0, sigfigs 0, snaplen 65535, Ethernet.
    out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&[0; 8])?;
    out.write_all(&65535u32.to_le_bytes())?;
    out.write_all(&1u32.to_le_bytes())?;
    for (i, f) in frames.iter().enumerate() {
        out.write_all(&(i as u32 / 1000).to_le_bytes())?;
        out.write_all(&((i as u32 % 1000) * 1000).to_le_bytes())?;
        out.write_all(&(f.len() as u32).to_le_bytes())?;
        out.write_all(&(f.len() as u32).to_le_bytes())?;
        out.write_all(f)?;
    }
    out.flush()
}
