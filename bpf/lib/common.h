/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared basics for every weft datapath program: kernel headers, verdicts,
 * byte-order helpers and the packet accessors the programs build on. */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Bumped whenever a map key/value layout changes. The agent pins maps under
 * .../v<WEFT_ABI_VERSION>/ so it never reuses a map of another layout. */
#define WEFT_ABI_VERSION 5

/* tcx verdicts we use (TC_ACT_* from pkt_cls.h are the same numbers). */
#define CTX_ACT_OK       TC_ACT_OK
#define CTX_ACT_DROP     TC_ACT_SHOT
#define CTX_ACT_REDIRECT TC_ACT_REDIRECT

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Reserved security identities (same numbers as Cilium so seeds read alike). */
#define IDENTITY_UNKNOWN     0
#define IDENTITY_HOST        1
#define IDENTITY_WORLD       2
#define IDENTITY_HEALTH      4
#define IDENTITY_REMOTE_NODE 6
#define IDENTITY_MIN_CLUSTER 256  /* allocated identities (pods) start here */

#define ETH_ALEN_ 6

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] &&
	       a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

static __always_inline void mac_copy(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, ETH_ALEN_);
}

/* skb->data and skb->data_end, each read by one load from the context:
 * written in C, clang may keep `skb + offset` in a register (or on the
 * stack) and load through it later, which the verifier refuses
 * ("dereference of modified ctx ptr"). */
#define SKB_LOAD(skb, field) ({                                                   \
	void *__v;                                                                \
	asm volatile("%0 = *(u32 *)(%1 + %2)"                                     \
		     : "=r"(__v)                                                  \
		     : "r"(skb), "i"(__builtin_offsetof(struct __sk_buff, field))); \
	__v;                                                                      \
})
#define skb_data(skb)     SKB_LOAD(skb, data)
#define skb_data_end(skb) SKB_LOAD(skb, data_end)

/* Returns the Ethernet header or NULL when the frame is too short. */
static __always_inline struct ethhdr *eth_hdr(struct __sk_buff *skb)
{
	void *data = skb_data(skb);
	void *end = skb_data_end(skb);
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return NULL;
	return eth;
}

/* Returns the IPv4 header following the Ethernet header, or NULL when the
 * packet is too short or the header length is invalid. */
static __always_inline struct iphdr *ip4_hdr(struct __sk_buff *skb)
{
	void *data = skb_data(skb);
	void *end = skb_data_end(skb);
	struct iphdr *ip = data + sizeof(struct ethhdr);

	if ((void *)(ip + 1) > end)
		return NULL;
	if (ip->ihl < 5)
		return NULL;
	return ip;
}

/* Decrements the TTL as a router does and fixes the header checksum. Returns
 * 0 on success, negative when the TTL would expire. */
static __always_inline int ip4_dec_ttl(struct __sk_buff *skb, struct iphdr *ip)
{
	__u32 off = sizeof(struct ethhdr) + __builtin_offsetof(struct iphdr, check);
	__u16 old = bpf_htons((__u16)ip->ttl << 8);
	__u16 new;

	if (ip->ttl <= 1)
		return -1;
	new = bpf_htons((__u16)(ip->ttl - 1) << 8);
	if (bpf_l3_csum_replace(skb, off, old, new, 2) < 0)
		return -1;
	/* Write the TTL after the checksum: the helper may have moved data. */
	{
		__u8 ttl_new = (__u8)(bpf_ntohs(new) >> 8);

		if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr) +
					__builtin_offsetof(struct iphdr, ttl),
					&ttl_new, 1, 0) < 0)
			return -1;
	}
	return 0;
}

/* Rewrites both MAC addresses of the frame (used before every redirect). */
static __always_inline int eth_rewrite(struct __sk_buff *skb, const __u8 *src,
				       const __u8 *dst)
{
	if (bpf_skb_store_bytes(skb, 0, dst, ETH_ALEN_, 0) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, ETH_ALEN_, src, ETH_ALEN_, 0) < 0)
		return -1;
	return 0;
}

#endif /* WEFT_COMMON_H */
