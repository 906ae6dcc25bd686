/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from-host: tc egress of weft_host, the node's gateway device.
 *
 * The node routes its pod CIDR to weft_host, so everything the host itself
 * sends to a pod leaves through here. The source identity is the host (1);
 * a packet for a local endpoint goes on to the delivery stage (lxc.c
 * ipv4_to_endpoint: conntrack, then the pod's device), one for a pod on
 * another node is encapsulated towards that node. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/trace.h"
#include "lib/drop.h"
#include "lib/dbg.h"
#include "lib/pipeline.h"
#include "lib/encap.h"

static __always_inline int from_host_ipv4(struct __sk_buff *skb, struct drop_ctx *d)
{
	struct trace_ctx t = { .src_id = IDENTITY_HOST };
	struct encap_ctx c = { .src_id = IDENTITY_HOST };
	struct endpoint_info *dst;
	struct iphdr *ip = ip4_hdr(skb);
	__be32 daddr;

	if (!ip)
		return DROP(DROP_INVALID);
	daddr = ip->daddr;
	send_trace(skb, TRACE_FROM_HOST, &t);

	dst = lookup_endpoint(daddr);
	if (!dst) {
		struct ipcache_info *remote = ipcache_lookup(daddr);

		if (remote && remote->tunnel_endpoint) {
			d->dst_id = remote->sec_identity;
			return encap_to_node(skb, &c, remote);
		}
	}
	if (!dst || (dst->flags & ENDPOINT_F_HOST)) {
		send_debug(skb, DBG_IP_ID_MAP_FAILED4, 0, daddr, 0, 0);
		t.dst_id = IDENTITY_WORLD;
		send_trace(skb, TRACE_TO_STACK, &t);
		return CTX_ACT_OK;
	}
	send_debug(skb, DBG_IP_ID_MAP_SUCCEED4, 0, daddr, dst->sec_identity, 0);
	d->dst_ep = dst->ep_id;
	d->dst_id = dst->sec_identity;
	if (!pipeline_start(0, IDENTITY_HOST, HOOK_EGRESS))
		return DROP(DROP_NO_STATE);
	return tail_call_stage(skb, CALL_IPV4_TO_ENDPOINT);
}

SEC("classifier/from-host")
int from_host(struct __sk_buff *skb)
{
	struct drop_ctx d = { .src_id = IDENTITY_HOST };
	struct ethhdr *eth = eth_hdr(skb);

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return CTX_ACT_OK; /* weft_host is NOARP: nothing else to do */
	return finish(skb, from_host_ipv4(skb, &d), &d);
}

char _license[] SEC("license") = "Dual BSD/GPL";
