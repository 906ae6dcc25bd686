/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from-network: tc ingress of the node's underlay device.
 *
 * IP-in-IP: a protocol-4 packet from a known node is decapsulated here and
 * goes on to the delivery stage (lxc.c ipv4_to_endpoint). Native: a packet
 * for a local pod, routed here by another node, goes to the delivery stage
 * as it is. IP-in-IP and native carry no identity, so the source's comes
 * from the ipcache. NodePort: a connection to the node's address on a
 * service's node port goes to a backend, on this node as it is, on another
 * node as the node (SNAT, lib/nat.h). Replies to translated flows (a
 * masqueraded pod's, a NodePort's from another node's backend) go back to
 * where the flow came from. Everything else is the node's own traffic:
 * untouched. to-network, at the device's egress, gives the host's replies
 * to the NodePorts it serves itself their node port back. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/trace.h"
#include "lib/drop.h"
#include "lib/dbg.h"
#include "lib/pipeline.h"
#include "lib/conntrack.h"
#include "lib/lb.h"
#include "lib/nat.h"
#include "lib/encap.h"
#include "lib/ipip.h"
#include "lib/icmp.h"

/* Identity of a source address: a pod's, a node's, or world. A remote
 * host is the remote-node identity here. */
static __always_inline __u32 source_identity(__be32 saddr)
{
	struct ipcache_info *info = ipcache_lookup(saddr);
	__u32 id = info ? info->sec_identity : IDENTITY_WORLD;

	return id == IDENTITY_HOST ? IDENTITY_REMOTE_NODE : id;
}

/* Whether `saddr` is a pod's (a cluster identity), on any node. */
static __always_inline int from_pod(__be32 saddr)
{
	struct ipcache_info *info = ipcache_lookup(saddr);

	return info && info->sec_identity >= IDENTITY_MIN_CLUSTER;
}

/* On to the delivery stage, or to the host when not for a local pod. */
static __always_inline int to_endpoint_or_host(struct __sk_buff *skb, struct drop_ctx *d)
{
	struct endpoint_info *dst;
	struct iphdr *ip = ip4_hdr(skb);

	if (!ip)
		return DROP(DROP_INVALID);
	dst = lookup_endpoint(ip->daddr);
	if (!dst || (dst->flags & ENDPOINT_F_HOST))
		return up_to_host(skb, d);
	return to_delivery_stage(skb, d, dst);
}

/* A NodePort packet that will not fit the path to the backend's node once
 * encapsulated (DF set): dropped (an event says why), and the client gets
 * "fragmentation needed" from the node, out of the node's device, quoting
 * the packet as the client sent it (to the node port: its socket must
 * recognise it). */
static __always_inline int nodeport_too_big(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p,
					    const struct weft_config *cfg, struct drop_ctx *d)
{
	struct ethhdr *eth;
	__u8 mac[ETH_ALEN_];
	int ret;

	drop_finish(skb, DROP(DROP_FRAG_NEEDED), d);
	ret = lb_untranslate(skb, l4_off, p);
	if (ret < 0)
		return ret;
	eth = eth_hdr(skb);
	if (!eth)
		return DROP(DROP_INVALID);
	send_debug(skb, DBG_FRAG_NEEDED, 0, cfg->path_mtu, 0, 0);
	mac_copy(mac, eth->h_dest);
	if (icmp_unreachable(skb, cfg->node_ip4, ICMP_FRAG_NEEDED, cfg->path_mtu, mac) < 0)
		return DROP(DROP_WRITE_ERROR);
	return bpf_redirect_neigh(cfg->underlay_ifindex, NULL, 0, 0);
}

/* A NodePort flow whose backend is on another node (externalTrafficPolicy
 * Cluster): it goes on from the node's own address and a port of its own
 * (lib/nat.h), so the backend answers this node, which answers the client
 * as the service (nat_reply). The backend's node sees the remote-node
 * identity, as with any SNAT. */
static __always_inline int nodeport_to_node(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p,
					    const struct weft_config *cfg, struct drop_ctx *d)
{
	struct encap_ctx c = { .src_id = IDENTITY_HOST };
	struct ipcache_info *remote = ipcache_lookup(p->key.daddr);
	struct iphdr *ip;
	int ret;

	if (!remote || !remote->tunnel_endpoint)
		return DROP(DROP_UNROUTABLE);
	d->dst_id = remote->sec_identity;
	ip = ip4_hdr(skb);
	if (!ip)
		return DROP(DROP_INVALID);
	if (too_big(skb, ip, cfg->path_mtu))
		return nodeport_too_big(skb, l4_off, p, cfg, d);
	ret = snat_out(skb, l4_off, p, p->rev_nat_id, 0);
	if (ret < 0)
		return ret;
	return encap_to_node(skb, &c, remote);
}

/* The backend of the NodePort flow whose reply `p` (node:nodePort ->
 * client) quotes: the one its CT_SERVICE entry remembers, or NULL. */
static __always_inline struct lb_backend *nodeport_flow_backend(const struct ct_packet *p)
{
	struct lb_frontend *fe = lb_lookup(p->key.saddr, p->key.sport, p->key.proto);
	struct ct_entry *e;
	struct ct_key k;

	if (!fe || !(fe->flags & LB_F_NODEPORT))
		return NULL;
	ct_key_reverse(&k, &p->key);
	k.scope = CT_SERVICE;
	e = bpf_map_lookup_elem(ct_map(k.proto), &k);
	if (!e)
		return NULL;
	return bpf_map_lookup_elem(&weft_lb_backends, &e->backend_id);
}

/* An ICMP error about a NodePort flow's reply (fragmentation needed on the
 * client's path, above all) arriving for the node: it quotes the reply as
 * it left, node:nodePort -> client, and the backend must hear about its
 * own packet. The quote's source becomes the backend's again; a backend
 * on this node gets the error through its delivery stage, one on another
 * node (the flow SNATed) gets it through the tunnel, its quote's
 * destination the node's port that the backend answered. The outer source
 * (the router that sent it) is kept. Returns 1 when not about a NodePort
 * flow. */
static __always_inline int nodeport_related(struct __sk_buff *skb, struct iphdr *ip, struct drop_ctx *d)
{
	struct encap_ctx c = { .src_id = IDENTITY_HOST };
	__u32 l4_off = sizeof(struct ethhdr) + ip->ihl * 4;
	__be32 node = ip->daddr, sender = ip->saddr;
	struct ipcache_info *remote;
	struct endpoint_info *dst;
	struct lb_backend *be;
	struct nat_entry *ne;
	struct ct_packet p;
	struct nat_key nk;
	__be32 backend;
	int ret;

	ret = ct_extract(skb, ip, CT_INGRESS, &p);
	if (ret < 0)
		return drop_reason(ret) == DROP_FRAG_NOT_FOUND ? 1 : ret;
	if (!p.related || (p.key.proto != IPPROTO_TCP && p.key.proto != IPPROTO_UDP))
		return 1;
	be = nodeport_flow_backend(&p);
	if (!be)
		return 1;
	backend = be->address;
	d->src_id = source_identity(sender);
	send_debug(skb, DBG_LB_BACKEND, 0, backend, bpf_ntohs(be->port), 0);
	if (icmp_quote_rewrite(skb, l4_off, p.key.proto, 0, p.key.saddr, backend, p.key.sport, be->port) < 0)
		return DROP(DROP_WRITE_ERROR);
	dst = lookup_endpoint(backend);
	if (!dst) {
		/* SNATed on to another node (nodeport_to_node): the backend
		 * answered this node's port of the flow. */
		nk = (struct nat_key){ .saddr = p.key.daddr, .daddr = backend, .sport = p.key.dport,
				       .dport = be->port, .proto = p.key.proto, .dir = NAT_OUT };
		ne = bpf_map_lookup_elem(&weft_nat, &nk);
		remote = ipcache_lookup(backend);
		if (!ne || !remote || !remote->tunnel_endpoint)
			return DROP(DROP_UNROUTABLE);
		if (icmp_quote_rewrite(skb, l4_off, p.key.proto, 1, p.key.daddr, ne->addr, p.key.dport, ne->port) < 0)
			return DROP(DROP_WRITE_ERROR);
	}
	if (dst && (dst->flags & ENDPOINT_F_HOST))
		return CTX_ACT_OK; /* the host's own port: up to its stack */
	if (icmp_outer_rewrite(skb, 1, node, backend) < 0)
		return DROP(DROP_WRITE_ERROR);
	if (!dst) {
		d->dst_id = remote->sec_identity;
		return encap_to_node(skb, &c, remote);
	}
	return to_delivery_stage(skb, d, dst);
}

/* A NodePort flow whose backend is this node's host (a hostNetwork pod):
 * up to the stack, to the backend's port. Its flow is tracked (no local
 * endpoint: endpoint id 0) with the service's reverse-NAT id, so the
 * host's reply leaves from the node port again (to-network). */
static __always_inline int nodeport_to_host(struct __sk_buff *skb, struct ct_packet *p, struct drop_ctx *d)
{
	struct trace_ctx t = { .src_id = d->src_id, .dst_id = IDENTITY_HOST };
	int ret, state = ct_lookup(skb, 0, p);

	if (state == CT_NEW) {
		ret = ct_create(skb, 0, d->src_id, p);
		if (ret < 0)
			return ret;
	}
	t.state = state;
	send_trace(skb, TRACE_TO_HOST, &t);
	return CTX_ACT_OK;
}

/* A connection from outside to one of the node's addresses on a NodePort:
 * translated to a backend on this node (lib/lb.h) and on to the delivery
 * stage, which keeps the reverse-NAT id in the flow's entry. Returns 1
 * when the packet is not for a NodePort. */
static __always_inline int nodeport_in(struct __sk_buff *skb, struct iphdr *ip, struct drop_ctx *d)
{
	struct trace_ctx t = {};
	struct pipeline_state *st;
	struct endpoint_info *dst;
	struct lb_frontend *fe;
	struct ct_packet p;
	__u32 l4_off = sizeof(struct ethhdr) + ip->ihl * 4;
	__s64 vip;
	int ret;

	struct weft_config *cfg = config_get();
	__be16 dport;

	if (ip->protocol == IPPROTO_ICMP)
		return nodeport_related(skb, ip, d);
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 1;
	/* Most of what reaches the node (VXLAN, its own connections) is not
	 * in the node port range: no map lookup for it. A later fragment has
	 * no port to look at: its first fragment's, if that was a NodePort's,
	 * is in weft_frags. */
	if (!cfg)
		return 1;
	if (!(ip->frag_off & bpf_htons(IP_OFFSET)) &&
	    (bpf_skb_load_bytes(skb, l4_off + 2, &dport, sizeof(dport)) < 0 ||
	     bpf_ntohs(dport) < cfg->nodeport_min || bpf_ntohs(dport) > cfg->nodeport_max))
		return 1;
	ret = ct_extract(skb, ip, CT_INGRESS, &p);
	if (ret < 0)
		return drop_reason(ret) == DROP_FRAG_NOT_FOUND ? 1 : ret;
	fe = lb_lookup(p.key.daddr, p.key.dport, p.key.proto);
	if (!fe || !(fe->flags & LB_F_NODEPORT))
		return 1;
	d->src_id = source_identity(p.key.saddr);
	vip = lb_translate(skb, l4_off, &p);
	if (vip < 0)
		return (int)vip;
	t.src_id = d->src_id;
	t.orig_ip = (__be32)vip;
	send_trace(skb, TRACE_FROM_NETWORK, &t);
	dst = lookup_endpoint(p.key.daddr);
	if (!dst)
		return nodeport_to_node(skb, l4_off, &p, cfg, d);
	if (dst->flags & ENDPOINT_F_HOST)
		return nodeport_to_host(skb, &p, d);
	d->dst_ep = dst->ep_id;
	d->dst_id = dst->sec_identity;
	st = pipeline_start(0, d->src_id, HOOK_INGRESS);
	if (!st)
		return DROP(DROP_NO_STATE);
	st->rev_nat_id = p.rev_nat_id;
	return tail_call_stage(skb, CALL_IPV4_TO_ENDPOINT);
}

static __always_inline int from_network_ipv4(struct __sk_buff *skb, struct drop_ctx *d)
{
	struct trace_ctx t = {};
	struct ipcache_info *sender;
	struct endpoint_info *dst;
	struct weft_config *cfg;
	struct iphdr *ip;
	__be32 outer;

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
			return DROP(DROP_UNKNOWN_SENDER);
		if (ipip_decap(skb) < 0)
			return DROP(DROP_INVALID);
		ip = ip4_hdr(skb);
		if (!ip)
			return DROP(DROP_INVALID);
		d->src_id = source_identity(ip->saddr);
		t.src_id = d->src_id;
		send_debug(skb, DBG_DECAP, 0, outer, t.src_id, 0);
		send_trace(skb, TRACE_FROM_NETWORK, &t);
		return to_endpoint_or_host(skb, d);
	}
	/* A reply to a translated flow, or a NodePort on one of this node's
	 * addresses. */
	if (ip->daddr == cfg->node_ip4) {
		int ret = nat_reply(skb, d);

		if (ret != 1)
			return ret;
		ip = ip4_hdr(skb);
		if (!ip)
			return CTX_ACT_OK;
		ret = nodeport_in(skb, ip, d);
		if (ret != 1)
			return ret;
		ip = ip4_hdr(skb);
		if (!ip)
			return CTX_ACT_OK;
	}
	if (cfg->mode != MODE_NATIVE)
		return CTX_ACT_OK;
	/* Native: only packets for local pods are ours, and the answers of
	 * backends to the host's service flows (lb_host_reply): to its pod
	 * gateway address (the route's source), or from a pod to the node's
	 * own address (the node's other traffic is not looked up). */
	dst = lookup_endpoint(ip->daddr);
	if (dst && (dst->flags & ENDPOINT_F_HOST) && (ip->daddr != cfg->node_ip4 || from_pod(ip->saddr)))
		return lb_host_reply(skb);
	if (!dst || (dst->flags & ENDPOINT_F_HOST))
		return CTX_ACT_OK;
	d->src_id = source_identity(ip->saddr);
	t.src_id = d->src_id;
	send_trace(skb, TRACE_FROM_NETWORK, &t);
	return to_endpoint_or_host(skb, d);
}

static __always_inline int do_from_network(struct __sk_buff *skb)
{
	struct drop_ctx d = {};
	struct ethhdr *eth = eth_hdr(skb);

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return CTX_ACT_OK;
	return finish(skb, from_network_ipv4(skb, &d), &d);
}

SEC("classifier/from-network")
int from_network(struct __sk_buff *skb)
{
	return do_from_network(skb);
}

/* to-network: tc egress of the underlay device. The host's reply to a
 * NodePort flow it serves itself (nodeport_to_host) leaves from the node
 * port again; everything else leaves untouched, and without a lookup
 * while no NodePort of this node has the host as a backend (the agent
 * sets CFG_F_HOST_BACKENDS). */
static __always_inline int to_network_ipv4(struct __sk_buff *skb)
{
	struct weft_config *cfg = config_get();
	struct trace_ctx t = { .src_id = IDENTITY_HOST };
	struct ct_entry *e;
	struct ct_packet p;
	struct iphdr *ip;
	struct ct_key k;
	__u32 l4_off;
	int ret;

	ip = ip4_hdr(skb);
	if (!ip || !cfg || !(cfg->flags & CFG_F_HOST_BACKENDS) || ip->saddr != cfg->node_ip4 ||
	    (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_ICMP))
		return CTX_ACT_OK;
	l4_off = sizeof(struct ethhdr) + ip->ihl * 4;
	ret = ct_extract(skb, ip, CT_EGRESS, &p);
	if (ret < 0)
		return drop_reason(ret) == DROP_FRAG_NOT_FOUND ? CTX_ACT_OK : ret;
	if (ip->protocol == IPPROTO_ICMP && !p.related)
		return CTX_ACT_OK;
	/* Only the entry nodeport_to_host made: the flow as it came in (an
	 * error quotes the client's packet: that very tuple). */
	if (p.related) {
		k = p.key;
		k.scope = CT_INGRESS;
	} else {
		ct_key_reverse(&k, &p.key);
	}
	e = bpf_map_lookup_elem(ct_map(k.proto), &k);
	if (!e || !e->rev_nat_id || e->ep_id)
		return CTX_ACT_OK;
	p.rev_nat_id = e->rev_nat_id;
	if (p.related) {
		/* The host refused the client's datagram: about the node
		 * port, as the client sent it. */
		ret = lb_related_untranslate(skb, l4_off, &p);
	} else {
		ct_update(e, &p, 1);
		ret = lb_reverse(skb, l4_off, &p);
	}
	if (ret < 0)
		return ret;
	t.state = CT_REPLY;
	t.ifindex = skb->ifindex;
	send_trace(skb, TRACE_TO_NETWORK, &t);
	return CTX_ACT_OK;
}

static __always_inline int do_to_network(struct __sk_buff *skb)
{
	struct drop_ctx d = { .src_id = IDENTITY_HOST };
	struct ethhdr *eth = eth_hdr(skb);

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return CTX_ACT_OK;
	return finish(skb, to_network_ipv4(skb), &d);
}

SEC("classifier/to-network")
int to_network(struct __sk_buff *skb)
{
	return do_to_network(skb);
}

char _license[] SEC("license") = "Dual BSD/GPL";
