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
