/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from-container: tc ingress of every host-side pod device (lxc...).
 *
 * Every frame a pod sends passes here first. In order:
 *   1. find the endpoint that owns this device (weft_lxc, by ifindex);
 *   2. anti-spoofing: the source MAC and IPv4 address must be the endpoint's;
 *   3. ARP: answer for any address but the pod's own, with this device's MAC;
 *   4. IPv4 to another local pod: deliver straight into its netns
 *      (bpf_redirect_peer); to one of the node's addresses: hand to the
 *      host stack; to an address the ipcache places on another node:
 *      encapsulate towards that node (lib/encap.h); anything else: to the
 *      stack. */
#define WEFT_FILE_ID WEFT_FILE_LXC

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/trace.h"
#include "lib/drop.h"
#include "lib/dbg.h"
#include "lib/arp.h"
#include "lib/local.h"
#include "lib/encap.h"
#include "lib/icmp.h"

static __always_inline int handle_arp(struct __sk_buff *skb, __u16 ep,
				      __u32 sec, __u32 own_ip4,
				      const __u8 *lxc_mac)
{
	struct trace_ctx t = { .source = ep, .src_id = sec };
	struct arp_eth_ip4 *arp;
	__be32 target;

	send_trace(skb, TRACE_FROM_ENDPOINT, &t);
	arp = arp_request(skb);
	if (!arp)
		return CTX_ACT_OK; /* replies, gratuitous ARP: nothing to answer */
	target = arp->tip;
	if (target == own_ip4)
		return CTX_ACT_OK; /* duplicate address probe for itself */
	if (arp_make_reply(skb, lxc_mac) < 0)
		return send_drop(skb, DROP_WRITE_ERROR, ep, sec, 0);
	send_debug(skb, DBG_ARP_REPLY, ep, target, skb->ifindex, 0);
	send_capture(skb, ep, skb->ifindex);
	/* Back out of the device it came in on: the pod receives the reply. */
	return bpf_redirect(skb->ifindex, 0);
}

/* The pod's packet does not fit the path to the remote node: drop it and
 * tell the pod (ICMP fragmentation needed), as a router would. */
static __always_inline int refuse_too_big(struct __sk_buff *skb, __u16 ep, __u32 sec,
					  __u32 dst_id, const __u8 *lxc_mac)
{
	struct weft_config *cfg = config_get();
	__u32 mtu, gw;

	if (!cfg)
		return CTX_ACT_DROP;
	mtu = cfg->path_mtu;
	gw = cfg->gw_ip4;
	send_drop(skb, DROP_FRAG_NEEDED, ep, sec, dst_id);
	send_debug(skb, DBG_FRAG_NEEDED, ep, mtu, 0, 0);
	if (icmp_frag_needed(skb, gw, mtu, lxc_mac) < 0)
		return CTX_ACT_DROP;
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int handle_ipv4(struct __sk_buff *skb, __u16 ep,
				       __u32 sec, __u32 own_ip4, const __u8 *lxc_mac)
{
	struct trace_ctx t = { .source = ep, .src_id = sec };
	struct ipcache_info *remote;
	struct endpoint_info *dst;
	struct iphdr *ip = ip4_hdr(skb);
	__be32 daddr;

	if (!ip)
		return send_drop(skb, DROP_INVALID, ep, sec, 0);
	if (ip->saddr != own_ip4)
		return send_drop(skb, DROP_INVALID_SIP, ep, sec, 0);
	send_trace(skb, TRACE_FROM_ENDPOINT, &t);

	daddr = ip->daddr;
	dst = lookup_endpoint(daddr);
	if (dst && (dst->flags & ENDPOINT_F_HOST)) {
		send_debug(skb, DBG_TO_HOST, ep, daddr, 0, 0);
		t.dst_id = IDENTITY_HOST;
		send_trace(skb, TRACE_TO_HOST, &t);
		return CTX_ACT_OK;
	}
	if (dst) {
		send_debug(skb, DBG_IP_ID_MAP_SUCCEED4, ep, daddr,
			   dst->sec_identity, 0);
		return local_delivery(skb, ep, sec, dst, DELIVER_FROM_INGRESS);
	}
	remote = ipcache_lookup(daddr);
	if (remote && remote->tunnel_endpoint) {
		struct weft_config *cfg = config_get();

		send_debug(skb, DBG_IP_ID_MAP_SUCCEED4, ep, daddr,
			   remote->sec_identity, 0);
		ip = ip4_hdr(skb);
		if (cfg && ip && too_big(skb, ip, cfg->path_mtu))
			return refuse_too_big(skb, ep, sec, remote->sec_identity, lxc_mac);
		return encap_to_node(skb, ep, sec, remote);
	}
	send_debug(skb, DBG_IP_ID_MAP_FAILED4, ep, daddr, 0, 0);
	t.dst_id = IDENTITY_WORLD;
	send_trace(skb, TRACE_TO_STACK, &t);
	return CTX_ACT_OK;
}

static __always_inline int do_from_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint_info *self;
	struct lxc_info *lxc;
	struct ethhdr *eth;
	__u8 lxc_mac[ETH_ALEN_];
	__u32 own_ip4, sec;
	__u16 ep;

	lxc = bpf_map_lookup_elem(&weft_lxc, &ifindex);
	if (!lxc)
		return send_drop(skb, DROP_NO_ENDPOINT, 0, 0, 0);
	own_ip4 = lxc->ip4;
	self = lookup_endpoint(own_ip4);
	if (!self)
		return send_drop(skb, DROP_NO_ENDPOINT, lxc->ep_id, 0, 0);
	ep = self->ep_id;
	sec = self->sec_identity;
	mac_copy(lxc_mac, self->node_mac);

	eth = eth_hdr(skb);
	if (!eth)
		return send_drop(skb, DROP_INVALID, ep, sec, 0);
	if (!mac_equal(eth->h_source, self->mac))
		return send_drop(skb, DROP_INVALID_SMAC, ep, sec, 0);

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_ARP):
		return handle_arp(skb, ep, sec, own_ip4, lxc_mac);
	case bpf_htons(ETH_P_IP):
		return handle_ipv4(skb, ep, sec, own_ip4, lxc_mac);
	default:
		return send_drop(skb, DROP_UNSUPPORTED_L3, ep, sec, 0);
	}
}

SEC("classifier/from-container")
int from_container(struct __sk_buff *skb)
{
	return do_from_container(skb);
}

char _license[] SEC("license") = "Dual BSD/GPL";
