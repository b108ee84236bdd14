// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
// Herd's direct egress (tc, on the TAP's egress): every frame the node's
// kernel sends on the TAP leaves at once through the NIC's kernel
// interface (`bpf_redirect` to its egress), with that interface's
// offloads (TSO, checksum), instead of waiting in the TAP's queue for an
// lcore to read it and send it again. The TAP has the NIC's MAC, so the
// frame is already what the fastpath would have sent.
//
// `herd_egress_nic[0]` holds the NIC's interface index; 0 leaves every
// frame to the TAP (the fastpath's way). `herd_egress_kept[0]` is the
// egress balance (packet/src/balance.rs): a frame whose flow hash modulo
// 256 is below it stays on the TAP for an lcore; 0 (the default) keeps
// none; heartbeats (socket priority HERD_HEARTBEAT_PRIORITY) are never
// kept. `herd_egress_count[0]` counts the frames redirected (a large
// segment counts once), per CPU.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

/* The priority of the membership's sockets (membership/src/driver.rs,
 * HEARTBEAT_PRIORITY). */
#define HERD_HEARTBEAT_PRIORITY 0x4865

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} herd_egress_nic SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} herd_egress_kept SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} herd_egress_count SEC(".maps");

SEC("tc")
int herd_egress(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u32 *nic = bpf_map_lookup_elem(&herd_egress_nic, &zero);
	if (!nic || *nic == 0)
		return TC_ACT_OK;
	/* Heartbeats (their socket's priority) always leave directly: a
	 * flood that keeps the lcores busy never holds them in the TAP. */
	__u32 *kept = bpf_map_lookup_elem(&herd_egress_kept, &zero);
	if (skb->priority != HERD_HEARTBEAT_PRIORITY && kept && *kept != 0 && (bpf_get_hash_recalc(skb) & 0xff) < *kept)
		return TC_ACT_OK;
	__u64 *count = bpf_map_lookup_elem(&herd_egress_count, &zero);
	if (count)
		*count += 1;
	return bpf_redirect(*nic, 0);
}

char _license[] SEC("license") = "Dual BSD/GPL";
