/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from-network: tc ingress of the node's underlay device (IP-in-IP and
 * native modes).
 *
 * IP-in-IP: a protocol-4 packet from a known node is decapsulated here and
 * delivered to the local pod. Native: a packet for a local pod, routed here
 * by another node, is delivered straight into the pod. IP-in-IP and native
 * carry no identity, so the source's comes from the ipcache. Everything
 * else is the node's own traffic: untouched. */
#define WEFT_FILE_ID WEFT_FILE_NETDEV

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/trace.h"
#include "lib/drop.h"
#include "lib/dbg.h"
#include "lib/local.h"
#include "lib/ipip.h"

/* Identity of a source address: a pod's, a node's, or world. */
static __always_inline __u32 source_identity(__be32 saddr)
{
	struct ipcache_info *info = ipcache_lookup(saddr);

	return info ? info->sec_identity : IDENTITY_WORLD;
}

static __always_inline int deliver(struct __sk_buff *skb, __u32 src_id)
{
	struct trace_ctx t = { .src_id = src_id };
	struct endpoint_info *dst;
	struct iphdr *ip = ip4_hdr(skb);

	if (!ip)
		return send_drop(skb, DROP_INVALID, 0, src_id, 0);
	dst = lookup_endpoint(ip->daddr);
	if (!dst || (dst->flags & ENDPOINT_F_HOST)) {
		t.dst_id = IDENTITY_HOST;
		send_trace(skb, TRACE_TO_HOST, &t);
		return CTX_ACT_OK;
	}
	return local_delivery(skb, 0, src_id, dst, DELIVER_FROM_INGRESS);
}

static __always_inline int do_from_network(struct __sk_buff *skb)
{
	struct trace_ctx t = {};
	struct ipcache_info *sender;
	struct endpoint_info *dst;
	struct ethhdr *eth = eth_hdr(skb);
	struct weft_config *cfg;
	struct iphdr *ip;
	__be32 outer;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return CTX_ACT_OK;
	ip = ip4_hdr(skb);
	if (!ip)
		return CTX_ACT_OK;
	cfg = config_get();
	if (!cfg)
		return CTX_ACT_OK;

	if (ip->protocol == IPPROTO_IPIP && cfg->mode == MODE_IPIP) {
		outer = ip->saddr;
		sender = ipcache_lookup(outer);
		if (!sender || !(sender->flags & IPCACHE_F_NODE))
			return send_drop(skb, DROP_UNKNOWN_SENDER, 0, 0, 0);
		if (ipip_decap(skb) < 0)
			return send_drop(skb, DROP_INVALID, 0, 0, 0);
		ip = ip4_hdr(skb);
		if (!ip)
			return send_drop(skb, DROP_INVALID, 0, 0, 0);
		t.src_id = source_identity(ip->saddr);
		if (t.src_id == IDENTITY_HOST)
			t.src_id = IDENTITY_REMOTE_NODE;
		send_debug(skb, DBG_DECAP, 0, outer, t.src_id, 0);
		send_trace(skb, TRACE_FROM_NETWORK, &t);
		return deliver(skb, t.src_id);
	}
	if (cfg->mode != MODE_NATIVE)
		return CTX_ACT_OK;
	/* Native: only packets for local pods are ours. */
	dst = lookup_endpoint(ip->daddr);
	if (!dst || (dst->flags & ENDPOINT_F_HOST))
		return CTX_ACT_OK;
	t.src_id = source_identity(ip->saddr);
	send_trace(skb, TRACE_FROM_NETWORK, &t);
	return local_delivery(skb, 0, t.src_id, dst, DELIVER_FROM_INGRESS);
}

SEC("classifier/from-network")
int from_network(struct __sk_buff *skb)
{
	return do_from_network(skb);
}

char _license[] SEC("license") = "Dual BSD/GPL";
