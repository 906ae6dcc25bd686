/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IP-in-IP as Calico puts it on the wire: an outer IPv4 header, protocol 4,
 * between the two nodes' addresses. This kernel has no ipip module, so the
 * header is added and removed here with bpf_skb_adjust_room, which also
 * keeps GSO working (the kernel segments the inner TCP stream). */
#ifndef WEFT_IPIP_H
#define WEFT_IPIP_H

#include "common.h"

/* Newer than the 6.1 UAPI headers this is built with. */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif

#define IPIP_HLEN 20

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Inserts an outer header from `src` to `dst` in front of the IPv4 packet. */
static __always_inline int ipip_encap(struct __sk_buff *skb, __be32 src, __be32 dst)
{
	struct iphdr outer = {};
	struct iphdr *inner = ip4_hdr(skb);
	__u16 inner_len;
	__u8 tos;

	if (!inner)
		return -1;
	inner_len = bpf_ntohs(inner->tot_len);
	tos = inner->tos;
	if (bpf_skb_adjust_room(skb, IPIP_HLEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) < 0)
		return -1;
	outer.version = 4;
	outer.ihl = 5;
	outer.tos = tos;
	outer.tot_len = bpf_htons(inner_len + IPIP_HLEN);
	outer.frag_off = bpf_htons(0x4000); /* DF: path MTU is the pod MTU's job */
	outer.ttl = 64;
	outer.protocol = IPPROTO_IPIP;
	outer.saddr = src;
	outer.daddr = dst;
	outer.check = csum_fold32(bpf_csum_diff(NULL, 0, (__be32 *)&outer, sizeof(outer), 0));
	if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &outer, sizeof(outer), 0) < 0)
		return -1;
	return 0;
}

/* Removes the outer header; the inner packet follows the Ethernet header. */
static __always_inline int ipip_decap(struct __sk_buff *skb)
{
	return bpf_skb_adjust_room(skb, -IPIP_HLEN, BPF_ADJ_ROOM_MAC,
				   BPF_F_ADJ_ROOM_DECAP_L3_IPV4);
}

#endif /* WEFT_IPIP_H */
