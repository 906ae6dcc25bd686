/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Runs from-container, then reads back the tunnel key it set. A key set for
 * transmit reads back with source and destination swapped: the remote node
 * the program chose comes back as local_ipv4. */
/* The stages run inline, so the probe sees the tunnel key they set. */
#define WEFT_INLINE_STAGES
#include "../lxc.c"
#include "probe.h"

SEC("classifier/probe-from-container")
int probe_from_container(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct tunnel_probe *p = probe_get();
	int verdict = do_from_container(skb);

	if (p && bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) == 0) {
		p->remote_ipv4 = key.local_ipv4;
		p->tunnel_id = key.tunnel_id;
		p->set = 1;
	}
	return verdict;
}
