/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Sending a packet to a pod on another node. In VXLAN mode the packet is
 * handed to weft_vxlan, an external (collect_md) VXLAN device, with the
 * tunnel key set per packet: the remote node as destination and the
 * sender's security identity as VNI, so the receiver knows who sent it
 * without looking anything up. */
#ifndef WEFT_ENCAP_H
#define WEFT_ENCAP_H

#include "common.h"
#include "maps.h"
#include "trace.h"
#include "drop.h"
#include "dbg.h"

static __always_inline int encap_to_node(struct __sk_buff *skb, __u16 src_ep,
					 __u32 src_id,
					 const struct ipcache_info *dst)
{
	struct trace_ctx t = { .source = src_ep, .src_id = src_id };
	struct bpf_tunnel_key key = {};
	struct weft_config *cfg = config_get();
	__be32 node = dst->tunnel_endpoint;
	__u32 ifindex;

	t.dst_id = dst->sec_identity;
	if (!cfg || !cfg->vxlan_ifindex)
		return send_drop(skb, DROP_NO_TUNNEL_DEV, src_ep, src_id, t.dst_id);
	ifindex = cfg->vxlan_ifindex;
	key.remote_ipv4 = bpf_ntohl(node);
	key.tunnel_id = src_id;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return send_drop(skb, DROP_WRITE_ERROR, src_ep, src_id, t.dst_id);
	send_debug(skb, DBG_ENCAP, src_ep, node, src_id, 0);
	t.ifindex = ifindex;
	send_trace(skb, TRACE_TO_OVERLAY, &t);
	return bpf_redirect(ifindex, 0);
}

#endif /* WEFT_ENCAP_H */
