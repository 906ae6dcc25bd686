/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP errors: rewriting the quote of one about a translated flow (lib/nat.h,
 * lib/lb.h), and errors back to a pod, rewritten in place from the packet
 * that caused them: "fragmentation needed" when a packet (DF set) does not fit
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

/* Where the port (ICMP echo: the id) of the source (`dst` 0) or the
 * destination is, relative to the L4 header. */
static __always_inline __u32 l4_port_off(__u8 proto, int dst)
{
	if (proto == IPPROTO_ICMP)
		return 4;
	return dst ? 2 : 0;
}

/* Rewrites the outer source (`dst` 0) or destination address of an ICMP
 * message: only the IPv4 checksum covers it (ICMP has no pseudo header).
 * Returns 0 or < 0. */
static __always_inline int icmp_outer_rewrite(struct __sk_buff *skb, int dst, __be32 old_ip, __be32 new_ip)
{
	__u32 off = sizeof(struct ethhdr) + (dst ? __builtin_offsetof(struct iphdr, daddr)
						 : __builtin_offsetof(struct iphdr, saddr));

	if (bpf_l3_csum_replace(skb, sizeof(struct ethhdr) + __builtin_offsetof(struct iphdr, check), old_ip,
				new_ip, sizeof(__be32)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &new_ip, sizeof(new_ip), 0) < 0 ? -1 : 0;
}

/* Rewrites the source (`dst` 0) or destination address and port of the
 * packet an ICMP error at `l4_off` quotes: the quoted header's checksum
 * and the ICMP checksum (all of it is ICMP payload) follow; the quoted L4
 * checksum is left as it is (receivers of an error do not check it: the
 * quote may be cut). Translating an error about a translated flow is this,
 * once or twice, and the outer address (icmp_outer_rewrite). Returns 0 or
 * < 0. */
static __always_inline int icmp_quote_rewrite(struct __sk_buff *skb, __u32 l4_off, __u8 proto, int dst,
					      __be32 old_ip, __be32 new_ip, __be16 old_port, __be16 new_port)
{
	__u32 icmp_csum = l4_off + 2, inner = l4_off + 8;
	__be16 old_check, new_check;
	__u8 ihl;

	if (bpf_skb_load_bytes(skb, inner, &ihl, 1) < 0 || bpf_skb_load_bytes(skb, inner + 10, &old_check, 2) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, inner + 10, old_ip, new_ip, sizeof(__be32)) < 0 ||
	    bpf_skb_load_bytes(skb, inner + 10, &new_check, 2) < 0 ||
	    bpf_skb_store_bytes(skb, inner + (dst ? 16 : 12), &new_ip, sizeof(__be32), 0) < 0 ||
	    bpf_skb_store_bytes(skb, inner + (ihl & 0xf) * 4 + l4_port_off(proto, dst), &new_port,
				sizeof(__be16), 0) < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, icmp_csum, old_ip, new_ip, sizeof(__be32)) < 0 ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_check, new_check, sizeof(__be16)) < 0 ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_port, new_port, sizeof(__be16)) < 0)
		return -1;
	return 0;
}

#endif /* WEFT_ICMP_H */
