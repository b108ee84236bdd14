//! The TAP's direct egress program (`bpf/egress.c`), run in the kernel
//! with `BPF_PROG_TEST_RUN` (as root).

use fastpath::dpdk::bpf::Object;
use fastpath::egress::{COUNT_MAP, KEPT_MAP, NIC_MAP, OBJECT, PROGRAM};
use packet::balance::SLOTS;

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

/// An IPv4 TCP frame from the node (what its kernel sends on the TAP).
fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 54];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x11]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[198, 18, 0, 100]);
    f[30..34].copy_from_slice(&[198, 19, 0, 7]);
    f
}

#[test]
fn every_frame_goes_to_the_nic_once_it_is_named_and_is_counted() {
    let object = Object::load(OBJECT).expect("the egress program loads (run as root)");
    let nic = object.map(NIC_MAP).unwrap();
    let count = object.map(COUNT_MAP).unwrap();
    // No NIC named yet: the frame stays with the TAP, uncounted.
    let (code, out) = object.run_tc(PROGRAM, &frame()).unwrap();
    assert_eq!(code, TC_ACT_OK);
    assert_eq!(out, frame(), "the frame leaves as it came");
    assert_eq!(count.percpu_u64_sum(0).unwrap(), 0);

    nic.update(&0u32.to_ne_bytes(), &1u32.to_ne_bytes())
        .unwrap();
    for (i, len) in [54usize, 1514].into_iter().enumerate() {
        let mut f = frame();
        f.resize(len, 0xab);
        let (code, out) = object.run_tc(PROGRAM, &f).unwrap();
        assert_eq!(code, TC_ACT_REDIRECT, "a {len}-byte frame is redirected");
        assert_eq!(out, f, "unchanged: the TAP already has the NIC's MAC");
        assert_eq!(count.percpu_u64_sum(0).unwrap(), i as u64 + 1);
    }
}

/// The frame of the flow from port `port`.
fn frame_of_flow(port: u16) -> Vec<u8> {
    let mut f = frame();
    f[34..36].copy_from_slice(&80u16.to_be_bytes());
    f[36..38].copy_from_slice(&port.to_be_bytes());
    f
}

#[test]
fn the_kept_flow_slots_stay_on_the_tap_flow_by_flow() {
    let object = Object::load(OBJECT).expect("the egress program loads (run as root)");
    object
        .map(NIC_MAP)
        .unwrap()
        .update(&0u32.to_ne_bytes(), &1u32.to_ne_bytes())
        .unwrap();
    let kept = object.map(KEPT_MAP).unwrap();
    let set = |slots: u32| {
        kept.update(&0u32.to_ne_bytes(), &slots.to_ne_bytes())
            .unwrap()
    };
    let stays = |port: u16| {
        let (code, _) = object.run_tc(PROGRAM, &frame_of_flow(port)).unwrap();
        assert!(code == TC_ACT_OK || code == TC_ACT_REDIRECT, "{code}");
        code == TC_ACT_OK
    };
    let ports = 20_000..20_400u16;
    set(SLOTS);
    assert!(
        ports.clone().all(stays),
        "every slot kept: every flow stays"
    );
    set(0);
    assert!(
        !ports.clone().any(stays),
        "none kept: every flow leaves directly"
    );
    set(SLOTS / 2);
    let first: Vec<bool> = ports.clone().map(stays).collect();
    let kept_flows = first.iter().filter(|s| **s).count();
    assert!(
        (100..=300).contains(&kept_flows),
        "half the slots keep about half the flows: {kept_flows} of 400"
    );
    let again: Vec<bool> = ports.clone().map(stays).collect();
    assert_eq!(first, again, "a flow keeps its way");
    // Fewer slots keep a subset of those flows: a change moves only flows
    // of the slots it gives up.
    set(SLOTS / 4);
    let fewer: Vec<bool> = ports.map(stays).collect();
    assert!(fewer.iter().zip(&first).all(|(f, a)| !f || *a));
    assert!(fewer.iter().filter(|s| **s).count() < kept_flows);
}
