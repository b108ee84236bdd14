// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
// Herd's ingress guard: what the kernel decides before the fastpath sees
// a frame, so that a flood costs little and never reaches the heartbeats.
//
// herd_sockfilter (af_packet: the socket filter of the PMD's packet
// sockets, run before a frame is copied into their ring; decide.h):
//   - another node's bucket: dropped (counted), never copied, but for a
//     connection's later segments (IPv4 TCP with neither SYN nor RST),
//     which it does not hash (the served path's frames): the lcore drops
//     another node's. RSTs are hashed: a SYN flood from spoofed sources
//     that answer brings one RST per SYN-ACK of every node, to every node;
//   - a peer's heartbeat, or junk to the heartbeat port: not copied (the
//     tc program below takes both);
//   - a frame this host sends (a packet socket sees those too): dropped;
//   - everything else: to the lcore (counted).
// herd_heartbeat_in (tc, the NIC interface's ingress, both drivers):
//   - a peer's heartbeat: redirected into the TAP's receive path, where
//     the node's address lives, straight to the membership socket: no
//     ring, no lcore, no TAP queue shared with a flood (counted);
//   - junk to the heartbeat port: dropped (counted);
//   - everything else: left alone (on af_packet an nftables rule drops it
//     after; on af_xdp it is what the pre-filter passed).
// `herd_tap[0]` holds the TAP's interface index; 0 (no TAP): heartbeats
// are left alone.
#include "decide.h"
#include <linux/pkt_cls.h>
#include <linux/if_packet.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} herd_tap SEC(".maps");


/* What decide_skb decides. Both keep the per-frame cost of the served
 * path low: a connection's later segments are never hashed here. */
#define FOR_SOCKET 0	/* the whole decision, but for an IPv4 TCP segment
			 * with neither SYN nor RST: left to the lcore
			 * (DECIDE_FASTPATH),
			 * which drops another node's itself */
#define FOR_TC 1	/* the heartbeat check alone */

/* herd_decide on a socket buffer's first bytes, as `mode` says. */
static __always_inline int decide_skb(struct __sk_buff *skb, int mode)
{
	__u8 head[HEAD] = {};
	if (skb->len >= HEAD) {
		if (bpf_skb_load_bytes(skb, 0, head, HEAD))
			return DECIDE_FASTPATH;
	} else if (skb->len >= 14 + 20 + 14) {
		/* Up to the TCP flags (an unpadded segment). */
		if (bpf_skb_load_bytes(skb, 0, head, 14 + 20 + 14))
			return DECIDE_FASTPATH;
	} else if (skb->len >= 14 + 24) {
		if (bpf_skb_load_bytes(skb, 0, head, 14 + 24))
			return DECIDE_FASTPATH;
	} else {
		return DECIDE_FASTPATH;
	}
	if (mode == FOR_TC)
		return herd_heartbeat(head, skb->len);
	if (skb->len >= 14 + 20 + 14 && head[12] == 0x08 && head[13] == 0x00 &&
	    head[14] == 0x45 && head[23] == IPPROTO_TCP && (head[47] & 0x06) == 0)
		return DECIDE_FASTPATH;
	return herd_decide(head, skb->len);
}

SEC("socket")
int herd_sockfilter(struct __sk_buff *skb)
{
	if (skb->pkt_type == PACKET_OUTGOING)
		return 0;
	switch (decide_skb(skb, FOR_SOCKET)) {
	case DECIDE_ELSEWHERE:
		count(COUNT_DROPPED);
		return 0;
	case DECIDE_HEARTBEAT:
	case DECIDE_JUNK:
		return 0;
	default:
		count(COUNT_TO_DPDK);
		return skb->len;
	}
}

SEC("tc")
int herd_heartbeat_in(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u32 *tap = bpf_map_lookup_elem(&herd_tap, &zero);
	if (!tap || *tap == 0)
		return TC_ACT_OK;
	switch (decide_skb(skb, FOR_TC)) {
	case DECIDE_HEARTBEAT:
		count(COUNT_HEARTBEAT);
		return bpf_redirect(*tap, BPF_F_INGRESS);
	case DECIDE_JUNK:
		count(COUNT_HEARTBEAT_JUNK);
		return TC_ACT_SHOT;
	default:
		return TC_ACT_OK;
	}
}

char _license[] SEC("license") = "Dual BSD/GPL";
