/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from-host: tc egress of weft_host, the node's gateway device.
 *
 * The node routes its pod CIDR to weft_host, so everything the host itself
 * sends to a pod leaves through here. The source identity is the host (1);
 * a packet for a local endpoint is delivered straight to its device, one
 * for a pod on another node is encapsulated towards that node. */
#define WEFT_FILE_ID WEFT_FILE_HOST

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/trace.h"
#include "lib/drop.h"
#include "lib/dbg.h"
#include "lib/local.h"
#include "lib/encap.h"

SEC("classifier/from-host")
int from_host(struct __sk_buff *skb)
{
	struct trace_ctx t = { .src_id = IDENTITY_HOST };
	struct endpoint_info *dst;
	struct ethhdr *eth = eth_hdr(skb);
	struct iphdr *ip;
	__be32 daddr;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return CTX_ACT_OK; /* weft_host is NOARP: nothing else to do */
	ip = ip4_hdr(skb);
	if (!ip)
		return send_drop(skb, DROP_INVALID, 0, IDENTITY_HOST, 0);
	daddr = ip->daddr;
	send_trace(skb, TRACE_FROM_HOST, &t);

	dst = lookup_endpoint(daddr);
	if (!dst) {
		struct ipcache_info *remote = ipcache_lookup(daddr);

		if (remote && remote->tunnel_endpoint)
			return encap_to_node(skb, 0, IDENTITY_HOST, remote);
	}
	if (!dst || (dst->flags & ENDPOINT_F_HOST)) {
		send_debug(skb, DBG_IP_ID_MAP_FAILED4, 0, daddr, 0, 0);
		t.dst_id = IDENTITY_WORLD;
		send_trace(skb, TRACE_TO_STACK, &t);
		return CTX_ACT_OK;
	}
	send_debug(skb, DBG_IP_ID_MAP_SUCCEED4, 0, daddr, dst->sec_identity, 0);
	return local_delivery(skb, 0, IDENTITY_HOST, dst, DELIVER_FROM_EGRESS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
