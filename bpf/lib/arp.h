/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ARP answered in BPF: a pod only ever ARPs for its gateway (its routes are
 * "GW dev eth0 scope link" and "default via GW"), and the answer is the MAC
 * of the pod's own host-side device. Two pods thus see two different MACs
 * for the same gateway, and no ARP ever reaches the node's stack. */
#ifndef WEFT_ARP_H
#define WEFT_ARP_H

#include "common.h"

/* linux/if_arp.h drags in libc headers, so the few ARP constants live here. */
#define ARPHRD_ETHER  1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY   2

struct arp_hdr {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8   ar_hln;
	__u8   ar_pln;
	__be16 ar_op;
};

struct arp_eth_ip4 {
	struct arp_hdr hdr;
	__u8  sha[ETH_ALEN_];
	__be32 sip;
	__u8  tha[ETH_ALEN_];
	__be32 tip;
} __attribute__((packed));

/* Returns the ARP payload of an Ethernet/IPv4 ARP request, or NULL. */
static __always_inline struct arp_eth_ip4 *arp_request(struct __sk_buff *skb)
{
	void *data = skb_data(skb);
	void *end = skb_data_end(skb);
	struct arp_eth_ip4 *arp = data + sizeof(struct ethhdr);

	if ((void *)(arp + 1) > end)
		return NULL;
	if (arp->hdr.ar_hrd != bpf_htons(ARPHRD_ETHER) ||
	    arp->hdr.ar_pro != bpf_htons(ETH_P_IP) ||
	    arp->hdr.ar_hln != ETH_ALEN_ || arp->hdr.ar_pln != 4 ||
	    arp->hdr.ar_op != bpf_htons(ARPOP_REQUEST))
		return NULL;
	return arp;
}

/* Turns the request in place into the reply "tip is at mac". */
static __always_inline int arp_make_reply(struct __sk_buff *skb,
					  const __u8 *mac)
{
	void *data = skb_data(skb);
	void *end = skb_data_end(skb);
	struct ethhdr *eth = data;
	struct arp_eth_ip4 *arp = data + sizeof(struct ethhdr);
	__be32 tip, sip;

	if ((void *)(arp + 1) > end)
		return -1;
	tip = arp->tip;
	sip = arp->sip;
	mac_copy(eth->h_dest, arp->sha);
	mac_copy(eth->h_source, mac);
	arp->hdr.ar_op = bpf_htons(ARPOP_REPLY);
	mac_copy(arp->tha, arp->sha);
	mac_copy(arp->sha, mac);
	arp->tip = sip;
	arp->sip = tip;
	return 0;
}

#endif /* WEFT_ARP_H */
