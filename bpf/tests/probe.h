/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Test-only: a way to see and set the tunnel key around a real program in
 * BPF_PROG_TEST_RUN (the key lives in skb metadata, not in the packet).
 * Never loaded by the agent. */
#ifndef WEFT_PROBE_H
#define WEFT_PROBE_H

struct tunnel_probe {
	__u32 remote_ipv4;  /* in: outer source to fake / out: remote set */
	__u32 tunnel_id;    /* in: VNI to fake / out: VNI set */
	__u32 set;          /* out: 1 when the program set a tunnel key */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tunnel_probe);
} weft_probe SEC(".maps");

static __always_inline struct tunnel_probe *probe_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&weft_probe, &zero);
}

#endif
