use super::*;
use proptest::prelude::*;

/// The RFC 1071 sum, one 16-bit word at a time: the reference the fast
/// sum is held to.
fn reference_sum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for pair in data.chunks(2) {
        let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        acc += u32::from(w);
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// A TCP frame over IPv4 or IPv6 with `payload`, as the kernel hands a
/// TSO segment over: lengths for the whole segment, checksum partial.
fn tcp_frame(ipv4: bool, payload: &[u8], flags: u8, options: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    let tcp_len = 20 + options;
    if ipv4 {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let total = (20 + tcp_len + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[198, 18, 0, 100, 198, 19, 0, 7]);
    } else {
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        let plen = (tcp_len + payload.len()) as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&[0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        f.extend_from_slice(&[0x20, 1, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    }
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&0xfffff000u32.to_be_bytes()); // wraps within the segment
    f.extend_from_slice(&7u32.to_be_bytes());
    f.push(((tcp_len / 4) as u8) << 4);
    f.push(flags);
    f.extend_from_slice(&[0xff, 0xff, 0xde, 0xad, 0, 0]);
    f.extend(std::iter::repeat_n(1u8, options));
    f.extend_from_slice(payload);
    f
}

fn l4_offset(ipv4: bool) -> usize {
    if ipv4 {
        34
    } else {
        54
    }
}

/// True if the frame's IP header (IPv4) and TCP checksums verify.
fn checksums_verify(ipv4: bool, f: &[u8]) -> bool {
    let l4 = l4_offset(ipv4);
    let mut pseudo = Vec::new();
    if ipv4 {
        if reference_sum(&f[14..34]) != 0xffff {
            return false;
        }
        pseudo.extend_from_slice(&f[26..34]);
    } else {
        pseudo.extend_from_slice(&f[22..54]);
    }
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((f.len() - l4) as u16).to_be_bytes());
    pseudo.extend_from_slice(&f[l4..]);
    reference_sum(&pseudo) == 0xffff
}

fn gso_hdr(ipv4: bool, mss: u16) -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if ipv4 { GSO_TCPV4 } else { GSO_TCPV6 },
        hdr_len: 0,
        gso_size: mss,
        csum_start: l4_offset(ipv4) as u16,
        csum_offset: 16,
    }
}

fn cut(frame: &[u8], hdr: &VnetHdr) -> Vec<Vec<u8>> {
    let s = Segmenter::new(frame, hdr).expect("a valid GSO frame");
    (0..s.count())
        .map(|i| {
            let mut out = vec![0u8; 2048];
            let n = s.write(i, &mut out).expect("fits");
            assert_eq!(n, s.frame_len(i));
            out.truncate(n);
            out
        })
        .collect()
}

#[test]
fn the_header_round_trips_in_little_endian() {
    let h = gso_hdr(true, 1448);
    let b = h.to_bytes();
    assert_eq!(&b[4..6], &1448u16.to_le_bytes());
    assert_eq!(VnetHdr::parse(&b), h);
}

#[test]
fn a_partial_checksum_is_completed_as_the_kernel_expects() {
    for ipv4 in [true, false] {
        let mut f = tcp_frame(ipv4, b"hello, partial checksum!", TCP_PSH, 0);
        let l4 = l4_offset(ipv4);
        // The kernel leaves the pseudo-header's folded sum in the field.
        let mut pseudo = if ipv4 {
            f[26..34].to_vec()
        } else {
            f[22..54].to_vec()
        };
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((f.len() - l4) as u16).to_be_bytes());
        let seed = reference_sum(&pseudo);
        f[l4 + 16..l4 + 18].copy_from_slice(&seed.to_be_bytes());
        if ipv4 {
            let s = !reference_sum(&f[14..34]);
            f[24..26].copy_from_slice(&s.to_be_bytes());
        }
        complete_checksum(&mut f, &gso_hdr(ipv4, 0)).unwrap();
        assert!(checksums_verify(ipv4, &f), "ipv4={ipv4}");
    }
}

#[test]
fn checksum_offsets_outside_the_frame_are_refused() {
    let mut f = vec![0u8; 40];
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 30,
        csum_offset: 9,
        ..Default::default()
    };
    assert_eq!(
        complete_checksum(&mut f, &h),
        Err(OffloadError::BadChecksumOffsets)
    );
    let h = VnetHdr {
        csum_start: 60,
        csum_offset: 0,
        ..h
    };
    assert_eq!(
        complete_checksum(&mut f, &h),
        Err(OffloadError::BadChecksumOffsets)
    );
}

#[test]
fn a_segment_is_cut_into_frames_a_receiver_accepts() {
    let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    for ipv4 in [true, false] {
        let frame = tcp_frame(ipv4, &payload, TCP_PSH | TCP_FIN | TCP_CWR | 0x10, 12);
        let frames = cut(&frame, &gso_hdr(ipv4, 1448));
        assert_eq!(frames.len(), 4);
        let l4 = l4_offset(ipv4);
        let h = l4 + 32;
        let mut joined = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            assert!(checksums_verify(ipv4, f), "frame {i} ipv4={ipv4}");
            let seq = u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap());
            assert_eq!(seq, 0xfffff000u32.wrapping_add(1448 * i as u32));
            let flags = f[l4 + 13];
            let last = i == 3;
            assert_eq!(flags & (TCP_FIN | TCP_PSH) != 0, last, "frame {i}");
            assert_eq!(flags & TCP_CWR != 0, i == 0, "frame {i}");
            assert_eq!(flags & 0x10, 0x10, "ACK on every frame");
            if ipv4 {
                let id = u16::from_be_bytes([f[18], f[19]]);
                assert_eq!(id, 0x1234 + i as u16);
                assert_eq!(
                    usize::from(u16::from_be_bytes([f[16], f[17]])),
                    f.len() - 14
                );
            } else {
                assert_eq!(
                    usize::from(u16::from_be_bytes([f[18], f[19]])),
                    f.len() - 54
                );
            }
            // Only IPv4's length, ID and checksum, IPv6's length differ
            // before the TCP sequence number.
            let rewritten = |j: usize| {
                if ipv4 {
                    (16..20).contains(&j) || (24..26).contains(&j)
                } else {
                    (18..20).contains(&j)
                }
            };
            for j in (0..l4 + 4).filter(|j| !rewritten(*j)) {
                assert_eq!(f[j], frame[j], "byte {j} of frame {i}");
            }
            joined.extend_from_slice(&f[h..]);
        }
        assert_eq!(joined, payload);
    }
}

#[test]
fn frames_that_are_not_tcp_gso_are_refused() {
    let frame = tcp_frame(true, &[0; 3000], 0x10, 0);
    let mut udp = gso_hdr(true, 1448);
    udp.gso_type = 3;
    assert_eq!(
        Segmenter::new(&frame, &udp).err(),
        Some(OffloadError::UnsupportedGso)
    );
    // Announced as IPv6 but IPv4 inside.
    assert_eq!(
        Segmenter::new(&frame, &gso_hdr(false, 1448)).err(),
        Some(OffloadError::BadGsoFrame)
    );
    assert_eq!(
        Segmenter::new(&frame, &gso_hdr(true, 0)).err(),
        Some(OffloadError::BadGsoFrame)
    );
    // Cut short inside the TCP header.
    assert_eq!(
        Segmenter::new(&frame[..40], &gso_hdr(true, 1448)).err(),
        Some(OffloadError::BadGsoFrame)
    );
    let s = Segmenter::new(&frame, &gso_hdr(true, 1448)).unwrap();
    assert_eq!(s.write(0, &mut [0u8; 100]), None, "an output too short");
}

proptest! {
    #[test]
    fn the_fast_sum_matches_rfc1071(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        prop_assert_eq!(fold(sum_be(&data, 0)), reference_sum(&data));
    }

    #[test]
    fn any_segment_reassembles_with_valid_checksums(
        ipv4 in any::<bool>(),
        len in 1usize..20_000,
        mss in 500u16..1500,
        options in 0usize..=10,
        seed in any::<u8>(),
    ) {
        let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let frame = tcp_frame(ipv4, &payload, TCP_PSH | 0x10, options * 4);
        let frames = cut(&frame, &gso_hdr(ipv4, mss));
        prop_assert_eq!(frames.len(), len.div_ceil(usize::from(mss)));
        let h = l4_offset(ipv4) + 20 + options * 4;
        let mut joined = Vec::new();
        for f in &frames {
            prop_assert!(checksums_verify(ipv4, f));
            prop_assert!(f.len() - h <= usize::from(mss));
            joined.extend_from_slice(&f[h..]);
        }
        prop_assert_eq!(joined, payload);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        frame in proptest::collection::vec(any::<u8>(), 0..200),
        gso_type in any::<u8>(),
        mss in any::<u16>(),
        csum_start in any::<u16>(),
        csum_offset in any::<u16>(),
    ) {
        let hdr = VnetHdr { flags: F_NEEDS_CSUM, gso_type, hdr_len: 0, gso_size: mss, csum_start, csum_offset };
        let mut f = frame.clone();
        let _ = complete_checksum(&mut f, &hdr);
        if let Ok(s) = Segmenter::new(&frame, &hdr) {
            let mut out = vec![0u8; 4096];
            for i in 0..s.count().min(64) {
                let _ = s.write(i, &mut out);
            }
        }
    }
}

// --- GRO: frames merged toward the kernel ---

use super::gro::{self, Merger, Segment};

impl gro::Frame for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// Frames as a sender's NIC puts them on the wire: a segment of `payload`
/// cut at `mss`, every checksum valid, PSH on the last frame only.
fn wire_frames(ipv4: bool, payload: &[u8], mss: u16, options: usize) -> Vec<Vec<u8>> {
    cut(
        &tcp_frame(ipv4, payload, TCP_PSH | 0x10, options),
        &gso_hdr(ipv4, mss),
    )
}

/// Every write the merger makes: its header and its bytes joined.
fn merged(frames: Vec<Vec<u8>>) -> Vec<(VnetHdr, Vec<u8>)> {
    let mut m = Merger::default();
    let mut writes = Vec::new();
    let mut out = |h: &VnetHdr, parts: &[&[u8]]| writes.push((*h, parts.concat()));
    for f in frames {
        m.push(f, &mut out);
    }
    m.flush(&mut out);
    writes
}

/// What the kernel makes of a write: a merged write is checked as the
/// kernel's GSO would see it (completed checksum, cut again at its GSO
/// size); a plain one is the frame.
fn as_received(hdr: &VnetHdr, bytes: &[u8]) -> Vec<Vec<u8>> {
    if hdr.gso_type == GSO_NONE {
        assert_eq!(hdr.flags, 0, "a frame alone claims no offload");
        return vec![bytes.to_vec()];
    }
    assert_eq!(hdr.flags, F_NEEDS_CSUM);
    let mut whole = bytes.to_vec();
    complete_checksum(&mut whole, hdr).unwrap();
    let ipv4 = hdr.gso_type == GSO_TCPV4;
    assert!(
        checksums_verify(ipv4, &whole),
        "the merged segment verifies"
    );
    cut(&whole, hdr)
}

#[test]
fn segments_of_one_flow_become_one_write_that_cuts_back_into_them() {
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 13 % 253) as u8).collect();
    for ipv4 in [true, false] {
        let frames = wire_frames(ipv4, &payload, 1448, 12);
        assert_eq!(frames.len(), 14);
        let writes = merged(frames.clone());
        assert_eq!(writes.len(), 1, "one write for the whole run");
        let (hdr, bytes) = &writes[0];
        assert_eq!(hdr.gso_size, 1448);
        assert_eq!(usize::from(hdr.hdr_len), l4_offset(ipv4) + 32);
        assert_eq!(as_received(hdr, bytes), frames, "ipv4={ipv4}");
    }
}

#[test]
fn what_cannot_be_merged_goes_alone_and_in_order() {
    let payload = vec![7u8; 5000];
    let frames = wire_frames(true, &payload, 1000, 0);
    // A gap (frame 2 missing) ends the run; a bad checksum is never merged.
    let mut with_gap = frames.clone();
    with_gap.remove(2);
    let writes = merged(with_gap.clone());
    assert_eq!(writes.len(), 2);
    let got: Vec<Vec<u8>> = writes.iter().flat_map(|(h, b)| as_received(h, b)).collect();
    assert_eq!(got, with_gap);

    let mut corrupt = frames.clone();
    let last = corrupt[1].len() - 1;
    corrupt[1][last] ^= 0x40;
    assert_eq!(Segment::parse(&corrupt[1]), None, "a bad TCP checksum");
    let writes = merged(corrupt.clone());
    assert_eq!(writes[0].0, VnetHdr::default(), "frame 0 alone");
    assert_eq!(
        writes[1],
        (VnetHdr::default(), corrupt[1].clone()),
        "frame 1 as it came"
    );
    let got: Vec<Vec<u8>> = writes.iter().flat_map(|(h, b)| as_received(h, b)).collect();
    assert_eq!(got, corrupt);

    // A different ack number, a SYN, a FIN, an IPv4 fragment: each alone.
    let mut other_ack = frames.clone();
    let l4 = 34;
    other_ack[1][l4 + 11] ^= 1;
    let fix = |f: &mut Vec<u8>| {
        f[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let mut pseudo = sum_be(&f[26..34], 0) + 6 + (f.len() - l4) as u64;
        pseudo = sum_be(&f[l4..], pseudo);
        let s = !fold(pseudo);
        f[l4 + 16..l4 + 18].copy_from_slice(&s.to_be_bytes());
    };
    fix(&mut other_ack[1]);
    assert!(Segment::parse(&other_ack[1]).is_some());
    assert_eq!(merged(other_ack.clone()).len(), 3, "0 | 1 | 2..5");
    for flags in [0x02u8, 0x11, 0x14] {
        let mut f = frames[0].clone();
        f[l4 + 13] = flags;
        fix(&mut f);
        assert_eq!(Segment::parse(&f), None, "flags {flags:#x}");
    }
    let mut frag = frames[0].clone();
    frag[20] |= 0x20; // MF
    frag[24..26].copy_from_slice(&[0, 0]);
    let s = !fold(sum_be(&frag[14..34], 0));
    frag[24..26].copy_from_slice(&s.to_be_bytes());
    assert_eq!(Segment::parse(&frag), None, "a fragment");
}

#[test]
fn interleaved_flows_merge_each_and_a_lone_frame_ends_them_all() {
    let a = wire_frames(true, &[1u8; 4000], 1000, 0);
    let mut b = wire_frames(true, &[2u8; 4000], 1000, 0);
    for f in &mut b {
        // Another client port: another flow (the checksum follows).
        f[34 + 3] ^= 1;
        let l4 = 34;
        f[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let pseudo = sum_be(&f[26..34], 0) + 6 + (f.len() - l4) as u64;
        let s = !fold(sum_be(&f[l4..], pseudo));
        f[l4 + 16..l4 + 18].copy_from_slice(&s.to_be_bytes());
    }
    let arp = vec![0xffu8; 60];
    let input = vec![
        a[0].clone(),
        b[0].clone(),
        a[1].clone(),
        b[1].clone(),
        arp.clone(),
        a[2].clone(),
        a[3].clone(),
        b[2].clone(),
        b[3].clone(),
    ];
    let writes = merged(input);
    let seen: Vec<Vec<Vec<u8>>> = writes.iter().map(|(h, b)| as_received(h, b)).collect();
    assert_eq!(
        seen,
        vec![
            vec![a[0].clone(), a[1].clone()],
            vec![b[0].clone(), b[1].clone()],
            vec![arp],
            vec![a[2].clone(), a[3].clone()],
            vec![b[2].clone(), b[3].clone()],
        ]
    );
}

#[test]
fn ethernet_padding_is_not_payload() {
    // Two 6-byte segments, each padded to 60 bytes as a NIC delivers them.
    let frames: Vec<Vec<u8>> = wire_frames(true, &[9u8; 12], 6, 0)
        .into_iter()
        .map(|mut f| {
            f.resize(60, 0);
            f
        })
        .collect();
    let writes = merged(frames.clone());
    assert_eq!(writes.len(), 1);
    let got = as_received(&writes[0].0, &writes[0].1);
    let unpadded: Vec<Vec<u8>> = frames.iter().map(|f| f[..54 + 6].to_vec()).collect();
    assert_eq!(got, unpadded);
}

proptest! {
    #[test]
    fn merged_writes_are_the_frames_the_sender_cut(
        flows in proptest::collection::vec((any::<bool>(), 1usize..9000, 200u16..1500, 0usize..=10), 1..5),
        order_seed in any::<u64>(),
        corrupt in proptest::option::of((any::<prop::sample::Index>(), any::<prop::sample::Index>())),
    ) {
        // Each flow's frames, its client port made distinct.
        let mut per_flow: Vec<Vec<Vec<u8>>> = Vec::new();
        for (k, (ipv4, len, mss, options)) in flows.iter().enumerate() {
            let payload: Vec<u8> = (0..*len).map(|i| (i * 7 + k) as u8).collect();
            let mut frames = wire_frames(*ipv4, &payload, *mss, options * 4);
            let l4 = l4_offset(*ipv4);
            for f in &mut frames {
                f[l4 + 2] = k as u8;
                f[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
                let addrs = if *ipv4 { &f[26..34] } else { &f[22..54] };
                let pseudo = sum_be(addrs, 0) + 6 + (f.len() - l4) as u64;
                let s = !fold(sum_be(&f[l4..], pseudo));
                f[l4 + 16..l4 + 18].copy_from_slice(&s.to_be_bytes());
            }
            per_flow.push(frames);
        }
        // Interleave the flows (each keeps its order), maybe corrupt one byte.
        let mut input = Vec::new();
        let mut next = vec![0usize; per_flow.len()];
        let mut state = order_seed | 1;
        while input.len() < per_flow.iter().map(Vec::len).sum::<usize>() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            let k = (state % per_flow.len() as u64) as usize;
            if next[k] < per_flow[k].len() {
                input.push(per_flow[k][next[k]].clone());
                next[k] += 1;
            }
        }
        if let Some((frame, byte)) = corrupt {
            let f = frame.get(&input).len();
            let i = frame.index(input.len());
            input[i][byte.index(f)] ^= 0x08;
        }
        // The kernel sees exactly the input frames, each flow in order.
        let writes = merged(input.clone());
        let got: Vec<Vec<u8>> = writes.iter().flat_map(|(h, b)| as_received(h, b)).collect();
        let mut got_sorted = got.clone();
        let mut want_sorted = input.clone();
        got_sorted.sort();
        want_sorted.sort();
        prop_assert_eq!(got_sorted, want_sorted);
        for k in 0..per_flow.len() {
            let port = |f: &Vec<u8>| {
                let l4 = if f.get(12..14) == Some(&[0x08, 0][..]) { 34 } else { 54 };
                f.get(l4 + 2).copied()
            };
            let of = |v: &Vec<Vec<u8>>| -> Vec<Vec<u8>> {
                v.iter().filter(|f| port(f) == Some(k as u8)).cloned().collect()
            };
            prop_assert_eq!(of(&got), of(&input), "flow {} in order", k);
        }
    }

    #[test]
    fn arbitrary_frames_never_panic_the_merger(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..20),
    ) {
        let _ = merged(frames);
    }
}
