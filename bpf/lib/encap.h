/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Sending a packet to a pod on another node, in the cluster's mode:
 *  - VXLAN: handed to weft_vxlan, an external (collect_md) VXLAN device,
 *    with the tunnel key set per packet: the remote node as destination and
 *    the sender's security identity as VNI, so the receiver knows who sent
 *    it without looking anything up;
 *  - IP-in-IP: an outer IPv4 header (protocol 4) between the node addresses,
 *    added here (lib/ipip.h), out of the underlay device;
 *  - native: unchanged, out of the underlay device towards the node.
 * In the last two the kernel resolves the next hop's MAC (redirect_neigh).
 * Each returns the redirect verdict or a DROP() code. */
#ifndef WEFT_ENCAP_H
#define WEFT_ENCAP_H

#include "common.h"
#include "maps.h"
#include "trace.h"
#include "drop.h"
#include "dbg.h"
#include "ipip.h"

/* Who is sending, for the traces and the VNI. */
struct encap_ctx {
	__u16 src_ep;
	__u8  state;    /* CT_* for the trace */
	__u8  pad;
	__u32 src_id;
};

static __always_inline int vxlan_to_node(struct __sk_buff *skb, const struct encap_ctx *c,
					 const struct ipcache_info *dst,
					 const struct weft_config *cfg)
{
	struct trace_ctx t = { .source = c->src_ep, .src_id = c->src_id, .state = c->state };
	struct bpf_tunnel_key key = {};
	__be32 node = dst->tunnel_endpoint;
	__u32 ifindex = cfg->vxlan_ifindex;

	t.dst_id = dst->sec_identity;
	if (!ifindex)
		return DROP(DROP_NO_TUNNEL_DEV);
	key.remote_ipv4 = bpf_ntohl(node);
	key.tunnel_id = c->src_id;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return DROP(DROP_WRITE_ERROR);
	send_debug(skb, DBG_ENCAP, c->src_ep, node, c->src_id, 0);
	t.ifindex = ifindex;
	send_trace(skb, TRACE_TO_OVERLAY, &t);
	return bpf_redirect(ifindex, 0);
}

/* Out of the underlay device, the next hop being the remote node. */
static __always_inline int underlay_to_node(struct __sk_buff *skb, const struct encap_ctx *c,
					    __u32 dst_id, __be32 node, __u32 ifindex)
{
	struct trace_ctx t = { .source = c->src_ep, .src_id = c->src_id,
			       .dst_id = dst_id, .ifindex = ifindex, .state = c->state };
	struct bpf_redir_neigh nh = { .nh_family = 2 /* AF_INET */, .ipv4_nh = node };

	send_trace(skb, TRACE_TO_NETWORK, &t);
	return bpf_redirect_neigh(ifindex, &nh, sizeof(nh), 0);
}

static __always_inline int encap_to_node(struct __sk_buff *skb, const struct encap_ctx *c,
					 const struct ipcache_info *dst)
{
	struct weft_config *cfg = config_get();
	__be32 node = dst->tunnel_endpoint;
	__u32 ifindex;

	if (!cfg)
		return DROP(DROP_NO_TUNNEL_DEV);
	if (cfg->mode == MODE_VXLAN)
		return vxlan_to_node(skb, c, dst, cfg);
	ifindex = cfg->underlay_ifindex;
	if (!ifindex)
		return DROP(DROP_NO_TUNNEL_DEV);
	if (cfg->mode == MODE_IPIP) {
		if (ipip_encap(skb, cfg->node_ip4, node) < 0)
			return DROP(DROP_WRITE_ERROR);
		send_debug(skb, DBG_ENCAP, c->src_ep, node, c->src_id, 0);
	} else {
		send_debug(skb, DBG_ROUTE, c->src_ep, node, c->src_id, 0);
	}
	return underlay_to_node(skb, c, dst->sec_identity, node, ifindex);
}

#endif /* WEFT_ENCAP_H */
