/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP errors back to a pod, rewritten in place from the packet that
 * caused them: "fragmentation needed" when a packet (DF set) does not fit
 * the path to another node once encapsulated, so the pod's stack lowers
 * its path MTU instead of the packet vanishing; "port unreachable" from a
 * service without a usable backend, so the client fails at once (TCP
 * reports connection refused) instead of timing out. */
#ifndef WEFT_ICMP_H
#define WEFT_ICMP_H

#include "common.h"
#include "ipip.h"

#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3
#define ICMP_FRAG_NEEDED  4
#define IP_DF             0x4000

struct frag_needed {
	struct iphdr ip;
	__u8  type;
	__u8  code;
	__u16 csum;
	__u16 unused;
	__u16 mtu;
	__u8  orig[28];  /* the offending IPv4 header and 8 bytes of it */
};
_Static_assert(sizeof(struct frag_needed) == 56, "no padding in the ICMP error");

/* Whether the packet must be refused: not GSO (the kernel segments those to
 * the path), DF set, and larger than the path MTU. */
static __always_inline int too_big(struct __sk_buff *skb, const struct iphdr *ip, __u32 mtu)
{
	return mtu && !skb->gso_size && (ip->frag_off & bpf_htons(IP_DF)) &&
	       bpf_ntohs(ip->tot_len) > mtu;
}

/* Rewrites the packet into "destination unreachable, `code`" from `src`
 * (with `mtu` for fragmentation needed), the frame from `src_mac` back to
 * the sender. Returns 0 on success. */
static __always_inline int icmp_unreachable(struct __sk_buff *skb, __be32 src, __u8 code, __u32 mtu,
					    const __u8 *src_mac)
{
	struct frag_needed r = {};
	struct ethhdr eth;
	__be32 orig_src;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return -1;
	if (bpf_skb_load_bytes(skb, sizeof(eth), r.orig, sizeof(r.orig)) < 0)
		return -1;
	__builtin_memcpy(&orig_src, &r.orig[12], 4);
	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.tot_len = bpf_htons(sizeof(r));
	r.ip.saddr = src;
	r.ip.daddr = orig_src;
	r.ip.check = csum_fold32(bpf_csum_diff(NULL, 0, (__be32 *)&r.ip, sizeof(r.ip), 0));
	r.type = ICMP_DEST_UNREACH;
	r.code = code;
	r.mtu = bpf_htons((__u16)mtu);
	r.csum = csum_fold32(bpf_csum_diff(NULL, 0, (__be32 *)&r.type, sizeof(r) - sizeof(r.ip), 0));
	mac_copy(eth.h_dest, eth.h_source);
	mac_copy(eth.h_source, src_mac);
	if (bpf_skb_change_tail(skb, sizeof(eth) + sizeof(r), 0) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, sizeof(eth), &r, sizeof(r), 0) < 0)
		return -1;
	return 0;
}

#endif /* WEFT_ICMP_H */
