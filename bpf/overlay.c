/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from-overlay: tc ingress of weft_vxlan, the collect_md VXLAN device.
 *
 * The kernel has decapsulated the packet; the tunnel key tells who sent it:
 * the outer source must be a known node (its address is in the ipcache
 * with IPCACHE_F_NODE), and the VNI is the sender's security identity. A
 * remote host (identity 1 on its own node) is the remote-node identity (6)
 * here. Then the inner packet goes to the local pod, or to the host stack
 * when it is for one of this node's addresses. */
#define WEFT_FILE_ID WEFT_FILE_OVERLAY

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/trace.h"
#include "lib/drop.h"
#include "lib/dbg.h"
#include "lib/local.h"

#ifndef PACKET_HOST
#define PACKET_HOST 0
#endif

/* Identities a VNI may carry: the reserved ones a node sends with, or an
 * allocated one (cluster identities are 256..65535, VNIs are 24 bits). */
static __always_inline int identity_valid(__u32 id)
{
	if (id >= 256)
		return id <= 0xffffff;
	return id == IDENTITY_HOST || id == IDENTITY_WORLD ||
	       id == IDENTITY_HEALTH || id == IDENTITY_REMOTE_NODE;
}

static __always_inline int do_from_overlay(struct __sk_buff *skb)
{
	struct trace_ctx t = {};
	struct bpf_tunnel_key key = {};
	struct ipcache_info *sender;
	struct endpoint_info *dst;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 outer;
	__u32 src_id;

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return send_drop(skb, DROP_NO_TUNNEL_KEY, 0, 0, 0);
	outer = bpf_htonl(key.remote_ipv4);
	src_id = key.tunnel_id;
	sender = ipcache_lookup(outer);
	if (!sender || !(sender->flags & IPCACHE_F_NODE))
		return send_drop(skb, DROP_UNKNOWN_SENDER, 0, src_id, 0);
	if (!identity_valid(src_id))
		return send_drop(skb, DROP_INVALID_IDENTITY, 0, src_id, 0);
	if (src_id == IDENTITY_HOST)
		src_id = IDENTITY_REMOTE_NODE;
	send_debug(skb, DBG_DECAP, 0, outer, src_id, 0);

	eth = eth_hdr(skb);
	if (!eth)
		return send_drop(skb, DROP_INVALID, 0, src_id, 0);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return send_drop(skb, DROP_UNSUPPORTED_L3, 0, src_id, 0);
	ip = ip4_hdr(skb);
	if (!ip)
		return send_drop(skb, DROP_INVALID, 0, src_id, 0);
	t.src_id = src_id;
	send_trace(skb, TRACE_FROM_OVERLAY, &t);

	/* The inner frame was addressed to the sender's gateway MAC, not to
	 * us: the stack would drop it as "other host". */
	bpf_skb_change_type(skb, PACKET_HOST);
	dst = lookup_endpoint(ip->daddr);
	if (!dst)
		return send_drop(skb, DROP_UNROUTABLE, 0, src_id, 0);
	if (dst->flags & ENDPOINT_F_HOST) {
		t.dst_id = IDENTITY_HOST;
		send_trace(skb, TRACE_TO_HOST, &t);
		return CTX_ACT_OK;
	}
	send_debug(skb, DBG_IP_ID_MAP_SUCCEED4, 0, ip->daddr, dst->sec_identity, 0);
	return local_delivery(skb, 0, src_id, dst, DELIVER_FROM_INGRESS);
}

SEC("classifier/from-overlay")
int from_overlay(struct __sk_buff *skb)
{
	return do_from_overlay(skb);
}

char _license[] SEC("license") = "Dual BSD/GPL";
