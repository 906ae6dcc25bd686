/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from-container: tc ingress of every host-side pod device (lxc...), and
 * the two pipeline stages every pod's traffic goes through (lib/pipeline.h).
 *
 * from_container, for every frame a pod sends:
 *   1. find the endpoint that owns this device (weft_lxc, by ifindex);
 *   2. anti-spoofing: the source MAC and IPv4 address must be the endpoint's;
 *   3. ARP: answer for any address but the pod's own, with this device's MAC;
 *   4. IPv4: on to stage ipv4_from_lxc.
 * ipv4_from_lxc: a service address becomes a backend (lib/lb.h), conntrack
 *   at the pod's egress (lib/conntrack.h), the destination's identity
 *   (from the ipcache), egress policy for a new
 *   flow (lib/policy.h), then forward: to another
 *   local pod (stage ipv4_to_endpoint), to the host stack for one of the
 *   node's addresses, encapsulated to the node of a remote pod
 *   (lib/encap.h), out of the node's device as the node when it leaves the
 *   cluster (masquerade, lib/nat.h), or to the stack.
 * ipv4_to_endpoint, for anything bound for a local pod, whichever program it
 *   entered by: conntrack at the pod's ingress (a service's reply gets the
 *   service's address back), ingress policy for a new flow, then delivery
 *   (lib/local.h).
 * Replies and established flows pass on their conntrack entry alone; a pod
 * is never isolated from itself. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/trace.h"
#include "lib/drop.h"
#include "lib/dbg.h"
#include "lib/pipeline.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/lb.h"
#include "lib/nat.h"
#include "lib/arp.h"
#include "lib/local.h"
#include "lib/encap.h"
#include "lib/icmp.h"

static __always_inline int stage_ipv4_from_lxc(struct __sk_buff *skb);
static __always_inline int stage_ipv4_to_endpoint(struct __sk_buff *skb);

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
		return DROP(DROP_WRITE_ERROR);
	send_debug(skb, DBG_ARP_REPLY, ep, target, skb->ifindex, 0);
	send_capture(skb, ep, skb->ifindex);
	/* Back out of the device it came in on: the pod receives the reply. */
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int from_container_checks(struct __sk_buff *skb,
						 struct drop_ctx *d)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint_info *self;
	struct lxc_info *lxc;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u8 lxc_mac[ETH_ALEN_];
	__u32 own_ip4;

	lxc = bpf_map_lookup_elem(&weft_lxc, &ifindex);
	if (!lxc)
		return DROP(DROP_NO_ENDPOINT);
	d->source = lxc->ep_id;
	own_ip4 = lxc->ip4;
	self = lookup_endpoint(own_ip4);
	if (!self)
		return DROP(DROP_NO_ENDPOINT);
	d->source = self->ep_id;
	d->src_id = self->sec_identity;
	mac_copy(lxc_mac, self->node_mac);

	eth = eth_hdr(skb);
	if (!eth)
		return DROP(DROP_INVALID);
	if (!mac_equal(eth->h_source, self->mac))
		return DROP(DROP_INVALID_SMAC);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return handle_arp(skb, d->source, d->src_id, own_ip4, lxc_mac);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return DROP(DROP_UNSUPPORTED_L3);
	ip = ip4_hdr(skb);
	if (!ip)
		return DROP(DROP_INVALID);
	if (ip->saddr != own_ip4)
		return DROP(DROP_INVALID_SIP);
	if (!pipeline_start(d->source, d->src_id, HOOK_INGRESS))
		return DROP(DROP_NO_STATE);
	return tail_call_stage(skb, CALL_IPV4_FROM_LXC);
}

static __always_inline int do_from_container(struct __sk_buff *skb)
{
	struct drop_ctx d = {};

	return finish(skb, from_container_checks(skb, &d), &d);
}

SEC("classifier/from-container")
int from_container(struct __sk_buff *skb)
{
	return do_from_container(skb);
}

/* Identity of any address: the ipcache knows local pods, pods on other
 * nodes and the nodes' own addresses; anything else is the world. */
static __always_inline __u32 peer_identity(__be32 addr)
{
	struct ipcache_info *info = ipcache_lookup(addr);

	return info ? info->sec_identity : IDENTITY_WORLD;
}

/* The flow a policy decision is about; ports only where the protocol has
 * them (an ICMP echo id is not a port). */
static __always_inline void flow_for_policy(struct policy_flow *f, const struct ct_packet *p,
					    __u16 ep, __u8 direction, __u32 peer_id, __be32 peer_addr)
{
	__u8 proto = p->key.proto;

	f->ep_id = ep;
	f->direction = direction;
	f->proto = proto;
	f->peer_id = peer_id;
	f->peer_addr = peer_addr;
	f->dport = 0;
	f->pad = 0;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP)
		f->dport = p->key.dport;
}

/* Answers the pod's packet with "destination unreachable, `code`" from
 * `src`, sent back out of the pod's device (from its gateway MAC). */
static __always_inline int answer_unreachable(struct __sk_buff *skb, __be32 src, __u8 code, __u32 mtu)
{
	struct endpoint_info *self;
	struct iphdr *ip = ip4_hdr(skb);
	__u8 lxc_mac[ETH_ALEN_];

	if (!ip)
		return DROP(DROP_INVALID);
	self = lookup_endpoint(ip->saddr);
	if (!self)
		return DROP(DROP_NO_ENDPOINT);
	mac_copy(lxc_mac, self->node_mac);
	if (icmp_unreachable(skb, src, code, mtu, lxc_mac) < 0)
		return DROP(DROP_WRITE_ERROR);
	return bpf_redirect(skb->ifindex, 0);
}

/* The pod's packet does not fit the path to the remote node: answer with
 * ICMP fragmentation needed, as a router would, and drop it. */
static __always_inline int refuse_too_big(struct __sk_buff *skb, __u16 ep,
					  const struct weft_config *cfg)
{
	send_debug(skb, DBG_FRAG_NEEDED, ep, cfg->path_mtu, 0, 0);
	return answer_unreachable(skb, cfg->gw_ip4, ICMP_FRAG_NEEDED, cfg->path_mtu);
}

/* A service without a usable backend: the packet is a drop (an event
 * says why) and the client gets "port unreachable" from the service at
 * once, never a silent timeout. */
static __always_inline int refuse_no_backend(struct __sk_buff *skb, int code, struct drop_ctx *d)
{
	struct iphdr *ip = ip4_hdr(skb);

	if (!ip)
		return DROP(DROP_INVALID);
	drop_finish(skb, code, d);
	return answer_unreachable(skb, ip->daddr, ICMP_PORT_UNREACH, 0);
}

/* A flow the pod opened to an address outside the cluster leaves as the
 * node (lib/nat.h), straight out of the node's device: the stack would
 * take a packet from its own address coming in from a pod for a martian.
 * Every packet of such a flow is translated or dropped, never sent on with
 * the pod's address. */
static __always_inline int masquerade(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p,
				      struct trace_ctx *t, const struct weft_config *cfg)
{
	int ret = snat_out(skb, l4_off, p, 0, t->source);

	if (ret < 0)
		return ret;
	t->ifindex = cfg->underlay_ifindex;
	send_trace(skb, TRACE_TO_NETWORK, t);
	return bpf_redirect_neigh(cfg->underlay_ifindex, NULL, 0, 0);
}

/* What the pod sends as the node (a NodePort flow's reply, an error about
 * it) goes straight out of the node's device: the stack would take a
 * packet from its own address coming in from a pod for a martian. Returns
 * 1 when the packet is not from the node's address. */
static __always_inline int leave_as_node(struct __sk_buff *skb, struct trace_ctx *t, int state)
{
	struct weft_config *cfg = config_get();
	struct iphdr *ip = ip4_hdr(skb);

	if (!cfg || !ip || !cfg->underlay_ifindex || ip->saddr != cfg->node_ip4)
		return 1;
	t->state = state;
	t->ifindex = cfg->underlay_ifindex;
	send_trace(skb, TRACE_TO_NETWORK, t);
	return bpf_redirect_neigh(cfg->underlay_ifindex, NULL, 0, 0);
}

/* A pod's connection through a service to itself (lib/lb.h
 * LB_HAIRPIN_IP4): it comes from the hairpin address, and `p` follows. */
static __always_inline int hairpin_out(struct __sk_buff *skb, __u32 l4_off, struct ct_packet *p)
{
	if (lb_rewrite(skb, l4_off, p->key.proto, 0, !p->later_fragment, p->key.saddr, LB_HAIRPIN_IP4,
		       p->key.sport, p->key.sport) < 0)
		return DROP(DROP_WRITE_ERROR);
	p->key.saddr = LB_HAIRPIN_IP4;
	return 0;
}

/* The pod's answer to the hairpin address (already from the service
 * again) goes back to the pod itself. */
static __always_inline int hairpin_back(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p)
{
	if (lb_rewrite(skb, l4_off, p->key.proto, 1, !p->later_fragment, LB_HAIRPIN_IP4, p->key.saddr,
		       p->key.dport, p->key.dport) < 0)
		return DROP(DROP_WRITE_ERROR);
	return 0;
}

/* An ICMP error the pod sends (port unreachable, fragmentation needed,
 * ...) about a packet of one of its flows: it goes where its header says,
 * without policy (the flow was allowed), translated as the flow is: as a
 * service's backend, about the client's packet to the service and, for a
 * NodePort, from the node (lib/lb.h); about a masqueraded flow, from the
 * node, quoting the packet as it arrived (lib/nat.h). An error about no
 * flow the pod has is dropped: it would carry anything past policy. */
static __always_inline int icmp_error_from_lxc(struct __sk_buff *skb, struct pipeline_state *st,
					       struct drop_ctx *d, struct ct_packet *p, __u32 l4_off,
					       __be32 saddr, __be32 daddr, struct trace_ctx *t, struct encap_ctx *c)
{
	struct weft_config *cfg = config_get();
	struct ipcache_info *remote;
	struct endpoint_info *dst;
	int ret;

	/* The error answers a packet the pod got: quoted to the pod, sent
	 * back to the quoted sender. */
	if (p->key.daddr != saddr || p->key.saddr != daddr)
		return DROP(DROP_ICMP_NO_FLOW);
	if (ct_lookup(skb, st->src_ep, p) != CT_RELATED)
		return DROP(DROP_ICMP_NO_FLOW);
	st->ct_state = CT_RELATED;
	t->state = CT_RELATED;
	c->state = CT_RELATED;
	d->dst_id = peer_identity(daddr);
	st->dst_id = d->dst_id;
	t->dst_id = d->dst_id;
	if (p->rev_nat_id) {
		ret = lb_related_untranslate(skb, l4_off, p);
		if (ret < 0)
			return ret;
		ret = leave_as_node(skb, t, CT_RELATED);
		if (ret != 1)
			return ret;
	}
	if (daddr == LB_HAIRPIN_IP4) {
		/* About the pod's own hairpin flow: the client is the pod,
		 * which sent from its own address (hairpin_out). */
		if (icmp_quote_rewrite(skb, l4_off, p->key.proto, 0, daddr, saddr, p->key.sport, p->key.sport) < 0 ||
		    icmp_outer_rewrite(skb, 1, daddr, saddr) < 0)
			return DROP(DROP_WRITE_ERROR);
		daddr = saddr;
	}
	send_trace(skb, TRACE_FROM_ENDPOINT, t);
	dst = lookup_endpoint(daddr);
	if (dst && (dst->flags & ENDPOINT_F_HOST)) {
		send_trace(skb, TRACE_TO_HOST, t);
		return CTX_ACT_OK;
	}
	if (dst) {
		d->dst_ep = dst->ep_id;
		return tail_call_stage(skb, CALL_IPV4_TO_ENDPOINT);
	}
	remote = ipcache_lookup(daddr);
	if (remote && remote->tunnel_endpoint)
		return encap_to_node(skb, c, remote);
	if (d->dst_id == IDENTITY_WORLD && cfg && (cfg->flags & CFG_F_MASQUERADE) && cfg->underlay_ifindex) {
		ret = snat_out_related(skb, l4_off, p);
		if (ret < 0)
			return ret;
		if (!ret)
			return leave_as_node(skb, t, CT_RELATED);
	}
	send_trace(skb, TRACE_TO_STACK, t);
	return CTX_ACT_OK;
}

static __always_inline int ipv4_from_lxc(struct __sk_buff *skb, struct pipeline_state *st,
					 struct drop_ctx *d)
{
	struct trace_ctx t = { .source = st->src_ep, .src_id = st->src_id };
	struct encap_ctx c = { .src_ep = st->src_ep, .src_id = st->src_id };
	struct ipcache_info *remote;
	struct endpoint_info *dst;
	struct weft_config *cfg;
	struct ct_packet p;
	struct iphdr *ip;
	__be32 daddr;
	__u32 l4_off;
	__s64 vip;
	int ret, state, self_flow;

	ip = ip4_hdr(skb);
	if (!ip)
		return DROP(DROP_INVALID);
	l4_off = sizeof(struct ethhdr) + ip->ihl * 4;
	ret = ct_extract(skb, ip, CT_EGRESS, &p);
	if (ret < 0)
		return ret;
	if (p.related)
		return icmp_error_from_lxc(skb, st, d, &p, l4_off, ip->saddr, ip->daddr, &t, &c);
	/* A service address becomes the flow's backend (lib/lb.h). */
	vip = lb_translate(skb, l4_off, &p);
	if (vip < 0 && drop_reason((int)vip) == DROP_NO_SERVICE_BACKEND)
		return refuse_no_backend(skb, (int)vip, d);
	if (vip < 0)
		return (int)vip;
	t.orig_ip = (__be32)vip;
	daddr = p.key.daddr;
	self_flow = daddr == p.key.saddr;
	if (vip && self_flow) {
		ret = hairpin_out(skb, l4_off, &p);
		if (ret < 0)
			return ret;
		st->rev_nat_id = p.rev_nat_id;
	}
	state = ct_lookup(skb, st->src_ep, &p);
	/* The reply of a NodePort flow: from the node's address and port
	 * again, out of the node's device. */
	if (state == CT_REPLY && p.rev_nat_id) {
		ret = lb_reverse(skb, l4_off, &p);
		if (ret < 0)
			return ret;
		ret = leave_as_node(skb, &t, state);
		if (ret != 1)
			return ret;
		if (daddr == LB_HAIRPIN_IP4) {
			ret = hairpin_back(skb, l4_off, &p);
			if (ret < 0)
				return ret;
			daddr = p.key.saddr;
			self_flow = 1;
		}
	}
	t.state = state;
	c.state = state;
	send_trace(skb, TRACE_FROM_ENDPOINT, &t);

	d->dst_id = peer_identity(daddr);
	st->dst_id = d->dst_id;
	t.dst_id = d->dst_id;
	/* A new flow meets egress policy; traffic to the pod's own address
	 * never does. */
	if (state == CT_NEW && !self_flow) {
		struct policy_flow pf;

		flow_for_policy(&pf, &p, st->src_ep, POLICY_EGRESS, d->dst_id, daddr);
		ret = policy_check(skb, &pf);
		if (ret < 0)
			return ret;
	}
	if (state == CT_NEW) {
		ret = ct_create(skb, st->src_ep, d->dst_id, &p);
		if (ret < 0)
			return ret;
	}
	st->ct_state = state;

	dst = lookup_endpoint(daddr);
	if (dst && (dst->flags & ENDPOINT_F_HOST)) {
		send_debug(skb, DBG_TO_HOST, st->src_ep, daddr, 0, 0);
		send_trace(skb, TRACE_TO_HOST, &t);
		return CTX_ACT_OK;
	}
	if (dst) {
		send_debug(skb, DBG_IP_ID_MAP_SUCCEED4, st->src_ep, daddr, d->dst_id, 0);
		d->dst_ep = dst->ep_id;
		return tail_call_stage(skb, CALL_IPV4_TO_ENDPOINT);
	}
	remote = ipcache_lookup(daddr);
	if (remote && remote->tunnel_endpoint) {
		send_debug(skb, DBG_IP_ID_MAP_SUCCEED4, st->src_ep, daddr, d->dst_id, 0);
		cfg = config_get();
		ip = ip4_hdr(skb);
		if (!ip)
			return DROP(DROP_INVALID);
		if (cfg && too_big(skb, ip, cfg->path_mtu)) {
			/* The pod's packet is gone (a drop event says why);
			 * what leaves is the ICMP error back to the pod,
			 * quoting the packet as the pod sent it. */
			drop_finish(skb, DROP(DROP_FRAG_NEEDED), d);
			ret = t.orig_ip ? lb_untranslate(skb, l4_off, &p) : 0;
			if (ret < 0)
				return ret;
			return refuse_too_big(skb, st->src_ep, cfg);
		}
		return encap_to_node(skb, &c, remote);
	}
	send_debug(skb, DBG_IP_ID_MAP_FAILED4, st->src_ep, daddr, 0, 0);
	if (d->dst_id == IDENTITY_WORLD && (state == CT_NEW || state == CT_ESTABLISHED)) {
		cfg = config_get();
		if (cfg && (cfg->flags & CFG_F_MASQUERADE) && cfg->underlay_ifindex)
			return masquerade(skb, l4_off, &p, &t, cfg);
	}
	send_trace(skb, TRACE_TO_STACK, &t);
	return CTX_ACT_OK;
}

static __always_inline int stage_ipv4_from_lxc(struct __sk_buff *skb)
{
	struct pipeline_state *st = pipeline_state();
	struct drop_ctx d = {};

	if (!st)
		return finish(skb, DROP(DROP_NO_STATE), &d);
	d.source = st->src_ep;
	d.src_id = st->src_id;
	return finish(skb, ipv4_from_lxc(skb, st, &d), &d);
}

SEC("classifier/tail-ipv4-from-lxc")
int tail_ipv4_from_lxc(struct __sk_buff *skb)
{
	return stage_ipv4_from_lxc(skb);
}

static __always_inline int ipv4_to_endpoint(struct __sk_buff *skb, struct pipeline_state *st,
					    struct drop_ctx *d)
{
	struct endpoint_info *dst;
	struct ct_packet p;
	struct iphdr *ip;
	__be32 saddr;
	__u32 ihl;
	int ret, state;

	ip = ip4_hdr(skb);
	if (!ip)
		return DROP(DROP_INVALID);
	saddr = ip->saddr;
	ihl = ip->ihl;
	dst = lookup_endpoint(ip->daddr);
	if (!dst || (dst->flags & ENDPOINT_F_HOST))
		return DROP(DROP_UNROUTABLE);
	d->dst_ep = dst->ep_id;
	d->dst_id = dst->sec_identity;
	st->dst_ep = dst->ep_id;
	ret = ct_extract(skb, ip, CT_INGRESS, &p);
	if (ret < 0)
		return ret;
	state = ct_lookup(skb, dst->ep_id, &p);
	/* A reply from a service's backend: from the service again; an
	 * ICMP error about the client's packet to it: about the service. */
	if (state == CT_REPLY) {
		ret = lb_reverse(skb, sizeof(struct ethhdr) + ihl * 4, &p);
		if (ret < 0)
			return ret;
	}
	if (state == CT_RELATED) {
		ret = lb_related_untranslate(skb, sizeof(struct ethhdr) + ihl * 4, &p);
		if (ret < 0)
			return ret;
	}
	if (state == CT_NEW && st->src_ep != dst->ep_id) {
		struct policy_flow pf;

		flow_for_policy(&pf, &p, dst->ep_id, POLICY_INGRESS, st->src_id, saddr);
		ret = policy_check(skb, &pf);
		if (ret < 0)
			return ret;
	}
	if (state == CT_NEW) {
		/* A NodePort flow (netdev.c translated it): replies are
		 * translated back on their way out of the pod. */
		p.rev_nat_id = st->rev_nat_id;
		ret = ct_create(skb, dst->ep_id, st->src_id, &p);
		if (ret < 0)
			return ret;
	}
	return local_delivery(skb, st, dst, state);
}

static __always_inline int stage_ipv4_to_endpoint(struct __sk_buff *skb)
{
	struct pipeline_state *st = pipeline_state();
	struct drop_ctx d = {};

	if (!st)
		return finish(skb, DROP(DROP_NO_STATE), &d);
	d.source = st->src_ep;
	d.src_id = st->src_id;
	return finish(skb, ipv4_to_endpoint(skb, st, &d), &d);
}

SEC("classifier/tail-ipv4-to-endpoint")
int tail_ipv4_to_endpoint(struct __sk_buff *skb)
{
	return stage_ipv4_to_endpoint(skb);
}

char _license[] SEC("license") = "Dual BSD/GPL";
