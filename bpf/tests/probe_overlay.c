/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Fakes what the VXLAN device hands from-overlay: a tunnel key with an outer
 * source and a VNI (set for transmit with swapped roles, so it reads back as
 * received from `remote_ipv4`), then runs the real from-overlay. */
#include "../overlay.c"
#include "probe.h"

SEC("classifier/probe-from-overlay")
int probe_from_overlay(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct tunnel_probe *p = probe_get();

	if (!p)
		return CTX_ACT_DROP;
	key.local_ipv4 = p->remote_ipv4;
	key.tunnel_id = p->tunnel_id;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return CTX_ACT_DROP;
	return do_from_overlay(skb);
}
