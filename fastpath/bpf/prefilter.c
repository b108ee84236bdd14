// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
// Herd's XDP pre-filter (af_xdp ports): decides the common frame in the
// driver (decide.h, herd_decide):
//   - an owned bucket -> XDP_PASS to the kernel, the destination MAC
//     rewritten to the NIC's (IPv4); IPv6 -> the fastpath, which hands it
//     to the TAP: the NIC's interface has IPv6 off (it must not answer
//     neighbor solicitations for itself), so the kernel would drop it;
//   - another node's bucket (IPv4, IPv6) -> XDP_DROP;
//   - a peer's heartbeat -> XDP_PASS: the ingress guard's tc program
//     (guard.c) hands it to the TAP, ahead of and apart from the data;
//   - junk to this node's heartbeat port (not from a peer) -> XDP_DROP,
//     counted;
//   - everything else (ARP, NDP, the node's own traffic, no rule, moving
//     buckets, anything it does not parse) -> the AF_XDP socket of the
//     queue (`xsks_map`, the name DPDK's af_xdp PMD fills), where the
//     fastpath decides as without the pre-filter.
// The bucket table is an inner map swapped whole into `herd_table` (slot
// 0): entry 0 holds the bucket count, entry 1 + b the state of bucket b.
// A packet reads one table; a new one replaces it atomically.
#include "decide.h"

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

static __always_inline int to_dpdk(struct xdp_md *ctx)
{
	count(COUNT_TO_DPDK);
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, 0);
}

SEC("xdp")
int herd_prefilter(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	__u8 head[HEAD] = {};
	__u32 len = (__u32)(end - data);
	if (len >= HEAD) {
		if (bpf_xdp_load_bytes(ctx, 0, head, HEAD))
			return to_dpdk(ctx);
	} else if (len >= 14 + 24) {
		if (bpf_xdp_load_bytes(ctx, 0, head, 14 + 24))
			return to_dpdk(ctx);
	} else {
		return to_dpdk(ctx);
	}
	switch (herd_decide(head, len)) {
	case DECIDE_OWNED: {
		if (head[12] != 0x08 || head[13] != 0x00)
			return to_dpdk(ctx);
		__u32 zero = 0;
		__u64 *own = bpf_map_lookup_elem(&herd_own_mac, &zero);
		if (!own || data + 6 > end)
			return to_dpdk(ctx);
		for (int i = 0; i < 6; i++)
			data[i] = (__u8)(*own >> (8 * i));
		count(COUNT_PASSED);
		return XDP_PASS;
	}
	case DECIDE_ELSEWHERE:
		count(COUNT_DROPPED);
		return XDP_DROP;
	case DECIDE_HEARTBEAT:
		count(COUNT_HEARTBEAT);
		return XDP_PASS;
	case DECIDE_JUNK:
		count(COUNT_HEARTBEAT_JUNK);
		return XDP_DROP;
	default:
		return to_dpdk(ctx);
	}
}

char _license[] SEC("license") = "Dual BSD/GPL";
