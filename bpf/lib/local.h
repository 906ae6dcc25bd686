/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Delivery to an endpoint on this node: rewrite the MACs so the pod sees the
 * frame as coming from its gateway, then hand it to the pod's device. */
#ifndef WEFT_LOCAL_H
#define WEFT_LOCAL_H

#include "common.h"
#include "maps.h"
#include "trace.h"
#include "drop.h"
#include "dbg.h"

/* How the frame leaves: from a tc ingress hook the peer redirect skips the
 * host-side device and the backlog queue entirely; from an egress hook only a
 * plain redirect to the host-side device is allowed. */
enum delivery_hook {
	DELIVER_FROM_INGRESS,
	DELIVER_FROM_EGRESS,
};

static __always_inline int local_delivery(struct __sk_buff *skb, __u16 src_ep,
					  __u32 src_id,
					  const struct endpoint_info *dst,
					  enum delivery_hook hook)
{
	struct trace_ctx t = {};
	__u32 ifindex = dst->ifindex;
	__u32 dst_id = dst->sec_identity;
	__u16 dst_ep = dst->ep_id;
	__u8 pod_mac[ETH_ALEN_], gw_mac[ETH_ALEN_];

	mac_copy(pod_mac, dst->mac);
	mac_copy(gw_mac, dst->node_mac);

	if (hook == DELIVER_FROM_INGRESS) {
		/* Routed hop: the pod behind the gateway sees TTL-1. */
		struct iphdr *ip = ip4_hdr(skb);

		if (!ip)
			return send_drop(skb, DROP_INVALID, src_ep, src_id, dst_id);
		if (ip4_dec_ttl(skb, ip) < 0)
			return send_drop(skb, DROP_TTL_EXCEEDED, src_ep, src_id, dst_id);
	}
	if (eth_rewrite(skb, gw_mac, pod_mac) < 0)
		return send_drop(skb, DROP_WRITE_ERROR, src_ep, src_id, dst_id);

	send_debug(skb, DBG_LOCAL_DELIVERY, src_ep, ifindex, src_id, dst_ep);
	t.source = dst_ep;
	t.dst_ep = dst_ep;
	t.src_id = src_id;
	t.dst_id = dst_id;
	t.ifindex = ifindex;
	send_trace(skb, TRACE_TO_ENDPOINT, &t);

	if (hook == DELIVER_FROM_INGRESS)
		return bpf_redirect_peer(ifindex, 0);
	return bpf_redirect(ifindex, 0);
}

#endif /* WEFT_LOCAL_H */
