//! Receive offload toward the kernel (GRO): consecutive TCP segments of one
//! flow, taken from the NIC in one burst, are handed to the TAP as one
//! large segment with a virtio-net GSO header. The kernel then runs its
//! receive path once per run instead of once per frame, as it would after
//! a NIC's or its own GRO (the TAP does no GRO of its own).
//!
//! A segment joins a run only after its IPv4 header and TCP checksums
//! verified here: the merged segment is handed over as checksum-partial,
//! which the kernel trusts, so nothing unverified is ever trusted. A frame
//! that does not qualify goes on alone and unflagged, and the kernel
//! verifies it as before.
//!
//! The rules follow the kernel's `tcp_gro_receive`: same Ethernet header,
//! addresses, ports,
//! IP TOS/TTL (traffic class/hop limit), TCP ack, window and options
//! (byte for byte), only ACK (and PSH on a run's last segment) set, each
//! segment starting where the run ends, every segment but the last
//! exactly the first one's size (the GSO size), at most 64 KiB of IP.
//! This module is pure: it decides and rewrites headers in byte slices; the
//! lcore keeps the frames and writes each run with one `writev`.

use super::{fold, sum_be, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, TCP_ACK, TCP_PSH};
use crate::wire::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP};
/// The largest IP packet (IPv4 total length / IPv6 payload length).
const MAX_IP: usize = 65_535;

/// A frame that may join a run: a verified TCP segment with payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Offsets of the IP and TCP headers, and where the payload starts.
    pub l3: u16,
    pub l4: u16,
    pub headers: u16,
    /// Payload bytes (Ethernet padding excluded).
    pub payload: u16,
    pub seq: u32,
    pub psh: bool,
    pub ipv4: bool,
}

impl Segment {
    /// Parses `frame` (Ethernet, untagged, IPv4 without options or
    /// fragments, or IPv6 with TCP as next header) and verifies its
    /// checksums. `None` for anything else: it is not merged.
    pub fn parse(frame: &[u8]) -> Option<Segment> {
        let be16 = |i: usize| {
            frame
                .get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let (ipv4, l4, ip_end) = match be16(12)? {
            ETHERTYPE_IPV4 => {
                let ip = frame.get(14..34)?;
                // Version 4, no options, TCP, neither MF nor an offset.
                if ip[0] != 0x45 || ip[9] != IPPROTO_TCP || ip[6] & 0x3f != 0 || ip[7] != 0 {
                    return None;
                }
                (true, 34, 14 + usize::from(be16(16)?))
            }
            ETHERTYPE_IPV6 => {
                if frame.get(14)? >> 4 != 6 || *frame.get(20)? != IPPROTO_TCP {
                    return None;
                }
                (false, 54, 54 + usize::from(be16(18)?))
            }
            _ => return None,
        };
        let flags = *frame.get(l4 + 13)?;
        let tcp_len = usize::from(frame.get(l4 + 12)? >> 4) * 4;
        let headers = l4 + tcp_len;
        if tcp_len < 20 || flags & !TCP_PSH != TCP_ACK || ip_end > frame.len() || headers >= ip_end
        {
            return None;
        }
        // The sums last: most frames that do not qualify (pure ACKs, SYNs,
        // FINs) are told by their flags alone.
        if ipv4 && fold(sum_be(&frame[14..34], 0)) != 0xffff {
            return None;
        }
        let segment = &frame[l4..ip_end];
        let mut pseudo = if ipv4 {
            sum_be(&frame[26..34], 0)
        } else {
            sum_be(&frame[22..54], 0)
        };
        pseudo += 6 + segment.len() as u64;
        if fold(sum_be(segment, pseudo)) != 0xffff {
            return None;
        }
        let seq = u32::from_be_bytes(frame[l4 + 4..l4 + 8].try_into().ok()?);
        Some(Segment {
            l3: 14,
            l4: l4 as u16,
            headers: headers as u16,
            payload: (ip_end - headers) as u16,
            seq,
            psh: flags & TCP_PSH != 0,
            ipv4,
        })
    }

    /// True if `a` and `b` (this segment's frame and `other`'s) belong to
    /// one TCP flow: same addresses and ports.
    pub fn same_flow(&self, a: &[u8], other: &Segment, b: &[u8]) -> bool {
        if self.ipv4 != other.ipv4 {
            return false;
        }
        let (addrs, l4) = if self.ipv4 {
            (26..34, 34)
        } else {
            (22..54, 54)
        };
        a[addrs.clone()] == b[addrs] && a[l4..l4 + 4] == b[l4..l4 + 4]
    }
}

/// The frames a run holds so far, described by its first segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    first: Segment,
    /// Segments and payload bytes in the run.
    segments: u16,
    payload: u32,
    /// No segment may follow (PSH, or one shorter than the GSO size).
    closed: bool,
    /// The last segment had PSH (the merged one gets it).
    psh: bool,
}

impl Run {
    pub fn start(first: Segment) -> Run {
        Run {
            first,
            segments: 1,
            payload: u32::from(first.payload),
            closed: first.psh,
            psh: first.psh,
        }
    }

    pub fn first(&self) -> &Segment {
        &self.first
    }

    pub fn segments(&self) -> u16 {
        self.segments
    }

    /// Adds `seg` (frame `frame`) to the run if it continues it; `head`
    /// is the run's first frame. The caller checked [`Segment::same_flow`].
    pub fn append(&mut self, head: &[u8], seg: &Segment, frame: &[u8]) -> bool {
        let f = &self.first;
        let next = f.seq.wrapping_add(self.payload);
        let ip_total = usize::from(f.headers - f.l3) + self.payload as usize;
        if self.closed
            || seg.seq != next
            || seg.payload > f.payload
            || seg.headers != f.headers
            || ip_total + usize::from(seg.payload) > MAX_IP + usize::from(f.l4 - f.l3)
        {
            return false;
        }
        let (l3, l4, h) = (usize::from(f.l3), usize::from(f.l4), usize::from(f.headers));
        let same = |r: std::ops::Range<usize>| head[r.clone()] == frame[r];
        let ip_alike = if f.ipv4 {
            // TOS, DF, TTL.
            head[l3 + 1] == frame[l3 + 1]
                && head[l3 + 6] & 0x40 == frame[l3 + 6] & 0x40
                && head[l3 + 8] == frame[l3 + 8]
        } else {
            // Version, traffic class, flow label; hop limit.
            same(l3..l3 + 4) && head[l3 + 7] == frame[l3 + 7]
        };
        // The Ethernet header; ack, data offset, window, urgent pointer
        // and options (the flags were checked by parse: ACK, maybe PSH).
        if !same(0..l3)
            || !ip_alike
            || !same(l4 + 8..l4 + 13)
            || !same(l4 + 14..l4 + 16)
            || !same(l4 + 18..h)
        {
            return false;
        }
        self.segments += 1;
        self.payload += u32::from(seg.payload);
        self.closed = seg.psh || seg.payload < f.payload;
        self.psh = seg.psh;
        true
    }

    /// Rewrites the run's first frame (`head`) into the large segment's
    /// headers and returns the virtio-net header to write them with. The
    /// payloads of the other frames follow the headers, in order. A run
    /// of one frame is left as it is and gets a header without offloads
    /// (the kernel verifies it).
    pub fn finish(&self, head: &mut [u8]) -> VnetHdr {
        if self.segments < 2 {
            return VnetHdr::default();
        }
        let f = &self.first;
        let (l3, l4, h) = (usize::from(f.l3), usize::from(f.l4), usize::from(f.headers));
        let tcp_len = h - l4 + self.payload as usize;
        let pseudo = if f.ipv4 {
            let total = ((l4 - l3) + tcp_len) as u16;
            head[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            head[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let ip_sum = !fold(sum_be(&head[l3..l4], 0));
            head[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());
            sum_be(&head[l3 + 12..l3 + 20], 0)
        } else {
            head[l3 + 4..l3 + 6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            sum_be(&head[l3 + 8..l3 + 40], 0)
        };
        if self.psh {
            head[l4 + 13] |= TCP_PSH;
        }
        // Checksum partial: the field holds the pseudo-header's sum, as a
        // sender's TSO segment does.
        let partial = fold(pseudo + 6 + tcp_len as u64);
        head[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if f.ipv4 { GSO_TCPV4 } else { GSO_TCPV6 },
            hdr_len: h as u16,
            gso_size: f.payload,
            csum_start: l4 as u16,
            csum_offset: 16,
        }
    }
}

/// What every member frame contributes after the first: its payload.
pub fn payload_of<'a>(seg: &Segment, frame: &'a [u8]) -> &'a [u8] {
    let start = usize::from(seg.headers);
    &frame[start..start + usize::from(seg.payload)]
}

/// Runs open at once (flows in one burst); the oldest is written when a
/// new flow finds no room.
pub const MAX_RUNS: usize = 8;
/// Segments in one run at most (the kernel's GRO stops at 64 too).
pub const MAX_SEGMENTS: usize = 64;

/// A frame the merger holds: an mbuf in the lcore, bytes in tests.
pub trait Frame {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
}

/// A run's frames with their segments.
type Members<F> = Vec<(F, Segment)>;

/// The frames of one burst on their way to the kernel, merged per flow.
/// [`push`](Merger::push) each frame in order, then [`flush`](Merger::flush);
/// `out` is called once per write: the virtio-net header and the pieces
/// of the frame (one piece for a frame alone; for a run, the rewritten
/// headers with the first payload, then each further payload). Frames are
/// dropped after their write. Frames of one flow keep their order; frames
/// that cannot be merged end every open run first, so they keep theirs.
pub struct Merger<F> {
    open: Vec<(Run, Members<F>)>,
    spare: Vec<Members<F>>,
}

impl<F: Frame> Default for Merger<F> {
    fn default() -> Self {
        Merger {
            open: Vec::with_capacity(MAX_RUNS),
            spare: (0..MAX_RUNS)
                .map(|_| Vec::with_capacity(MAX_SEGMENTS))
                .collect(),
        }
    }
}

impl<F: Frame> Merger<F> {
    pub fn push(&mut self, frame: F, out: &mut impl FnMut(&VnetHdr, &[&[u8]])) {
        let Some(seg) = Segment::parse(frame.bytes()) else {
            self.flush(out);
            out(&VnetHdr::default(), &[frame.bytes()]);
            return;
        };
        let same = self.open.iter().position(|(run, members)| {
            run.first()
                .same_flow(members[0].0.bytes(), &seg, frame.bytes())
        });
        if let Some(i) = same {
            let (run, members) = &mut self.open[i];
            if members.len() < MAX_SEGMENTS && run.append(members[0].0.bytes(), &seg, frame.bytes())
            {
                members.push((frame, seg));
                if run.closed {
                    self.write(i, out);
                }
                return;
            }
            self.write(i, out);
        } else if self.open.len() == MAX_RUNS {
            self.write(0, out);
        }
        let mut members = self.spare.pop().unwrap_or_default();
        let run = Run::start(seg);
        members.push((frame, seg));
        self.open.push((run, members));
        if run.closed {
            self.write(self.open.len() - 1, out);
        }
    }

    /// Writes every open run (the end of a burst).
    pub fn flush(&mut self, out: &mut impl FnMut(&VnetHdr, &[&[u8]])) {
        while !self.open.is_empty() {
            self.write(0, out);
        }
    }

    fn write(&mut self, i: usize, out: &mut impl FnMut(&VnetHdr, &[&[u8]])) {
        let (run, mut members) = self.open.remove(i);
        let hdr = run.finish(members[0].0.bytes_mut());
        let mut parts: [&[u8]; MAX_SEGMENTS] = [&[]; MAX_SEGMENTS];
        if members.len() == 1 {
            parts[0] = members[0].0.bytes();
        } else {
            let first = &members[0];
            let h = usize::from(first.1.headers) + usize::from(first.1.payload);
            parts[0] = &first.0.bytes()[..h];
            for (part, (f, seg)) in parts.iter_mut().zip(&members).skip(1) {
                *part = payload_of(seg, f.bytes());
            }
        }
        out(&hdr, &parts[..members.len()]);
        members.clear();
        self.spare.push(members);
    }
}
