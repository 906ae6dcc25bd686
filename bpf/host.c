/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from-host: tc egress of weft_host, the node's gateway device.
 *
 * The node routes its pod CIDR to weft_host, so everything the host itself
 * sends to a pod leaves through here. The source identity is the host (1);
 * a packet for a local endpoint goes on to the delivery stage (lxc.c
 * ipv4_to_endpoint: conntrack, then the pod's device), one for a pod on
 * another node is encapsulated towards that node. A packet to a ClusterIP
 * (routed here too) is translated to a backend first. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/trace.h"
#include "lib/drop.h"
#include "lib/dbg.h"
#include "lib/pipeline.h"
#include "lib/encap.h"
#include "lib/conntrack.h"
#include "lib/lb.h"
#include "lib/icmp.h"

/* The host's connection to a ClusterIP that socket LB did not translate
 * (a process outside its cgroup; the agent routes the service range to
 * weft_host): the service becomes a backend here (lib/lb.h), and the
 * flow is tracked so the backend's reply gets the service's address back
 * on its way up to the host (lb_host_reply). A service without a backend
 * answers "port unreachable" at once, into the host. Returns the service
 * address (0: not a service) or a DROP() code; `*rev_nat_id` for the
 * delivery stage. */
static __always_inline __s64 host_to_service(struct __sk_buff *skb, struct iphdr *ip, __u16 *rev_nat_id)
{
	__u32 l4_off = sizeof(struct ethhdr) + ip->ihl * 4;
	struct ct_packet p;
	__s64 vip;
	int ret;

	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	ret = ct_extract(skb, ip, CT_EGRESS, &p);
	if (ret < 0)
		return ret;
	vip = lb_translate(skb, l4_off, &p);
	if (vip <= 0)
		return vip;
	*rev_nat_id = p.rev_nat_id;
	if (ct_lookup(skb, 0, &p) == CT_NEW) {
		ret = ct_create(skb, 0, IDENTITY_HOST, &p);
		if (ret < 0)
			return ret;
	}
	return vip;
}

/* "Port unreachable" from the service, back up into the host. */
static __always_inline int host_refuse(struct __sk_buff *skb, int code, struct drop_ctx *d)
{
	struct ethhdr *eth = eth_hdr(skb);
	struct iphdr *ip = ip4_hdr(skb);
	__u8 mac[ETH_ALEN_];

	if (!eth || !ip)
		return DROP(DROP_INVALID);
	drop_finish(skb, code, d);
	mac_copy(mac, eth->h_dest);
	if (icmp_unreachable(skb, ip->daddr, ICMP_PORT_UNREACH, 0, mac) < 0)
		return DROP(DROP_WRITE_ERROR);
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

static __always_inline int from_host_ipv4(struct __sk_buff *skb, struct drop_ctx *d)
{
	struct trace_ctx t = { .src_id = IDENTITY_HOST };
	struct encap_ctx c = { .src_id = IDENTITY_HOST };
	struct pipeline_state *st;
	struct endpoint_info *dst;
	struct iphdr *ip = ip4_hdr(skb);
	__u16 rev_nat_id = 0;
	__be32 daddr;
	__s64 vip;

	if (!ip)
		return DROP(DROP_INVALID);
	vip = host_to_service(skb, ip, &rev_nat_id);
	if (vip < 0 && drop_reason((int)vip) == DROP_NO_SERVICE_BACKEND)
		return host_refuse(skb, (int)vip, d);
	if (vip < 0)
		return (int)vip;
	t.orig_ip = (__be32)vip;
	ip = ip4_hdr(skb);
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
	st = pipeline_start(0, IDENTITY_HOST, HOOK_EGRESS);
	if (!st)
		return DROP(DROP_NO_STATE);
	st->rev_nat_id = rev_nat_id;
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
