/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Delivery to an endpoint on this node: rewrite the MACs so the pod sees the
 * frame as coming from its gateway, then hand it to the pod's device. The
 * last step of the pipeline (lib/pipeline.h), after ingress conntrack and
 * policy. */
#ifndef WEFT_LOCAL_H
#define WEFT_LOCAL_H

#include "common.h"
#include "maps.h"
#include "trace.h"
#include "drop.h"
#include "dbg.h"
#include "pipeline.h"

/* Returns the redirect verdict, or a DROP() code. `hook` is how the entry
 * program may deliver: from a tc ingress hook the peer redirect skips the
 * host-side device and the backlog queue entirely; from an egress hook only
 * a plain redirect to the host-side device is allowed. */
static __always_inline int local_delivery(struct __sk_buff *skb,
					  const struct pipeline_state *st,
					  const struct endpoint_info *dst,
					  __u8 ct_state)
{
	struct trace_ctx t = {};
	__u32 ifindex = dst->ifindex;
	__u16 dst_ep = dst->ep_id;
	__u8 pod_mac[ETH_ALEN_], gw_mac[ETH_ALEN_];
	__u8 hook = st->hook;

	mac_copy(pod_mac, dst->mac);
	mac_copy(gw_mac, dst->node_mac);

	if (hook == HOOK_INGRESS) {
		/* Routed hop: the pod behind the gateway sees TTL-1. */
		struct iphdr *ip = ip4_hdr(skb);

		if (!ip)
			return DROP(DROP_INVALID);
		if (ip4_dec_ttl(skb, ip) < 0)
			return DROP(DROP_TTL_EXCEEDED);
	}
	if (eth_rewrite(skb, gw_mac, pod_mac) < 0)
		return DROP(DROP_WRITE_ERROR);

	send_debug(skb, DBG_LOCAL_DELIVERY, st->src_ep, ifindex, st->src_id, dst_ep);
	t.source = dst_ep;
	t.dst_ep = dst_ep;
	t.src_id = st->src_id;
	t.dst_id = dst->sec_identity;
	t.ifindex = ifindex;
	t.state = ct_state;
	send_trace(skb, TRACE_TO_ENDPOINT, &t);

	if (hook == HOOK_INGRESS)
		return bpf_redirect_peer(ifindex, 0);
	return bpf_redirect(ifindex, 0);
}

#endif /* WEFT_LOCAL_H */
