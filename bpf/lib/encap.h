/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Sending a packet to a pod on another node, in the cluster's mode:
 *  - VXLAN: handed to weft_vxlan, an external (collect_md) VXLAN device,
 *    with the tunnel key set per packet: the remote node as destination and
 *    the sender's security identity as VNI, so the receiver knows who sent
 *    it without looking anything up;
 *  - IP-in-IP: an outer IPv4 header (protocol 4) between the node addresses,
 *    added here (lib/ipip.h), out of the underlay device;
 *  - native: unchanged, out of the underlay device towards the node.
 * In the last two the kernel resolves the next hop's MAC (redirect_neigh). */
#ifndef WEFT_ENCAP_H
#define WEFT_ENCAP_H

#include "common.h"
#include "maps.h"
#include "trace.h"
#include "drop.h"
#include "dbg.h"
#include "ipip.h"

static __always_inline int vxlan_to_node(struct __sk_buff *skb, __u16 src_ep,
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

/* Out of the underlay device, the next hop being the remote node. */
static __always_inline int to_network(struct __sk_buff *skb, __u16 src_ep,
				      __u32 src_id, __u32 dst_id, __be32 node,
				      __u32 ifindex)
{
	struct trace_ctx t = { .source = src_ep, .src_id = src_id,
			       .dst_id = dst_id, .ifindex = ifindex };
	struct bpf_redir_neigh nh = { .nh_family = 2 /* AF_INET */, .ipv4_nh = node };

	send_trace(skb, TRACE_TO_NETWORK, &t);
	return bpf_redirect_neigh(ifindex, &nh, sizeof(nh), 0);
}

static __always_inline int encap_to_node(struct __sk_buff *skb, __u16 src_ep,
					 __u32 src_id,
					 const struct ipcache_info *dst)
{
	struct weft_config *cfg = config_get();
	__be32 node = dst->tunnel_endpoint;
	__u32 dst_id = dst->sec_identity;
	__u32 ifindex;

	if (!cfg)
		return send_drop(skb, DROP_NO_TUNNEL_DEV, src_ep, src_id, dst_id);
	if (cfg->mode == MODE_VXLAN)
		return vxlan_to_node(skb, src_ep, src_id, dst);
	ifindex = cfg->underlay_ifindex;
	if (!ifindex)
		return send_drop(skb, DROP_NO_TUNNEL_DEV, src_ep, src_id, dst_id);
	if (cfg->mode == MODE_IPIP) {
		if (ipip_encap(skb, cfg->node_ip4, node) < 0)
			return send_drop(skb, DROP_WRITE_ERROR, src_ep, src_id, dst_id);
		send_debug(skb, DBG_ENCAP, src_ep, node, src_id, 0);
	} else {
		send_debug(skb, DBG_ROUTE, src_ep, node, src_id, 0);
	}
	return to_network(skb, src_ep, src_id, dst_id, node, ifindex);
}

#endif /* WEFT_ENCAP_H */
