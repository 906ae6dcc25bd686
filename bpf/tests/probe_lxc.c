/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Runs the from-lxc stage as from-container would enter it (the pipeline
 * state of the endpoint that owns the device), then reads back the tunnel
 * key it set. A key set for transmit reads back with source and
 * destination swapped: the remote node the program chose comes back as
 * local_ipv4. from-container's own checks are not run here: with them
 * inlined too, the program's stack and lb_translate's would not fit the
 * verifier's 512 bytes together. */
/* The stage runs inline, so the probe sees the tunnel key it set. */
#define WEFT_INLINE_STAGES
#include "../lxc.c"
#include "probe.h"

static __always_inline int probe_enter(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint_info *self;
	struct lxc_info *lxc;

	lxc = bpf_map_lookup_elem(&weft_lxc, &ifindex);
	if (!lxc)
		return CTX_ACT_DROP;
	self = lookup_endpoint(lxc->ip4);
	if (!self || !pipeline_start(self->ep_id, self->sec_identity, HOOK_INGRESS))
		return CTX_ACT_DROP;
	return stage_ipv4_from_lxc(skb);
}

SEC("classifier/probe-from-container")
int probe_from_container(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct tunnel_probe *p = probe_get();
	int verdict = probe_enter(skb);

	if (p && bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) == 0) {
		p->remote_ipv4 = key.local_ipv4;
		p->tunnel_id = key.tunnel_id;
		p->set = 1;
	}
	return verdict;
}
