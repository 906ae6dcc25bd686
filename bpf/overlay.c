/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from-overlay: tc ingress of weft_vxlan, the collect_md VXLAN device.
 *
 * The kernel has decapsulated the packet; the tunnel key tells who sent it:
 * the outer source must be a known node (its address is in the ipcache
 * with IPCACHE_F_NODE), and the VNI is the sender's security identity. A
 * remote host (identity 1 on its own node) is the remote-node identity (6)
 * here. Then the inner packet goes on to the delivery stage (lxc.c
 * ipv4_to_endpoint), or to the host stack when it is for one of this
 * node's addresses (unless it answers a flow this node translated:
 * lib/nat.h). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/trace.h"
#include "lib/drop.h"
#include "lib/dbg.h"
#include "lib/pipeline.h"
#include "lib/nat.h"

#ifndef PACKET_HOST
#define PACKET_HOST 0
#endif

/* Identities a VNI may carry: the reserved ones a node sends with, or an
 * allocated one (cluster identities are 256..65535, VNIs are 24 bits). */
static __always_inline int identity_valid(__u32 id)
{
	if (id >= IDENTITY_MIN_CLUSTER)
		return id <= 0xffffff;
	return id == IDENTITY_HOST || id == IDENTITY_WORLD ||
	       id == IDENTITY_HEALTH || id == IDENTITY_REMOTE_NODE;
}

static __always_inline int from_overlay_checks(struct __sk_buff *skb, struct drop_ctx *d)
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
		return DROP(DROP_NO_TUNNEL_KEY);
	outer = bpf_htonl(key.remote_ipv4);
	src_id = key.tunnel_id;
	d->src_id = src_id;
	sender = ipcache_lookup(outer);
	if (!sender || !(sender->flags & IPCACHE_F_NODE))
		return DROP(DROP_UNKNOWN_SENDER);
	if (!identity_valid(src_id))
		return DROP(DROP_INVALID_IDENTITY);
	if (src_id == IDENTITY_HOST)
		src_id = IDENTITY_REMOTE_NODE;
	d->src_id = src_id;
	send_debug(skb, DBG_DECAP, 0, outer, src_id, 0);

	eth = eth_hdr(skb);
	if (!eth)
		return DROP(DROP_INVALID);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return DROP(DROP_UNSUPPORTED_L3);
	ip = ip4_hdr(skb);
	if (!ip)
		return DROP(DROP_INVALID);
	t.src_id = src_id;
	send_trace(skb, TRACE_FROM_OVERLAY, &t);

	/* The inner frame was addressed to the sender's gateway MAC, not to
	 * us: the stack would drop it as "other host". */
	bpf_skb_change_type(skb, PACKET_HOST);
	dst = lookup_endpoint(ip->daddr);
	if (!dst)
		return DROP(DROP_UNROUTABLE);
	if (dst->flags & ENDPOINT_F_HOST)
		return up_to_host(skb, d);
	send_debug(skb, DBG_IP_ID_MAP_SUCCEED4, 0, ip->daddr, dst->sec_identity, 0);
	return to_delivery_stage(skb, d, dst);
}

static __always_inline int do_from_overlay(struct __sk_buff *skb)
{
	struct drop_ctx d = {};

	return finish(skb, from_overlay_checks(skb, &d), &d);
}

SEC("classifier/from-overlay")
int from_overlay(struct __sk_buff *skb)
{
	return do_from_overlay(skb);
}

char _license[] SEC("license") = "Dual BSD/GPL";
