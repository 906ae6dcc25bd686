/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Drops: decided anywhere, reported once.
 *
 * A helper that refuses a packet returns DROP(reason): a negative number that
 * packs the reason with the file and line of the DROP() itself, so the event
 * names the header line that decided (lib/local.h:61 for a TTL drop), not the
 * program that happened to call the helper. Each program hands a negative
 * result to drop_finish(), which emits the one drop event, counts it per
 * reason (weft_drops, read by `weft status`) and returns the drop verdict.
 * Drops are always emitted: they are rare and precious. */
#ifndef WEFT_DROP_H
#define WEFT_DROP_H

#include "events.h"

/* Drop reasons, printed as text by `weft monitor` (the texts live in
 * crates/datapath/src/events.rs). Where Cilium has the same reason, weft
 * uses its number so seeds read alike; weft's own reasons start at 230,
 * above every number Cilium uses. */
#define DROP_INVALID_SMAC      130
#define DROP_INVALID_SIP       132
#define DROP_POLICY            133
#define DROP_INVALID           134
#define DROP_CT_INVALID_HDR    135
#define DROP_FRAG_NEEDED       136
#define DROP_UNSUPPORTED_L3    139
#define DROP_MISSED_TAIL_CALL  140
#define DROP_WRITE_ERROR       141
#define DROP_NO_TUNNEL_KEY     147
#define DROP_CT_CREATE_FAILED  155  /* "CT: Map insertion failed" */
#define DROP_NO_TUNNEL_DEV     160
#define DROP_UNSUPPORTED_L2    166
#define DROP_FIB_LOOKUP        169
#define DROP_INVALID_IDENTITY  171
#define DROP_UNKNOWN_SENDER    172
#define DROP_FRAG_NOT_FOUND    175  /* a later fragment whose first was not seen */
#define DROP_NO_SERVICE_BACKEND 158 /* "Service backend not found" */
#define DROP_TTL_EXCEEDED      196
#define DROP_NO_ENDPOINT       230  /* weft: pod device without an endpoint */
#define DROP_UNROUTABLE        231  /* weft: no local endpoint for a decapsulated packet */
#define DROP_NO_STATE          232  /* weft: the per-CPU pipeline state is missing */
#define DROP_NAT_NO_PORT       233  /* weft: every SNAT port towards the destination is taken */
#define DROP_NAT_TABLE_FULL    234  /* weft: weft_nat holds its configured number of entries */
#define DROP_NAT_UNSUPPORTED   235  /* weft: a protocol SNAT cannot translate (leaving untranslated would leak the pod's address) */
#define DROP_ICMP_NO_FLOW      236  /* weft: a pod's ICMP error about no flow it has */

/* Source files that can decide a drop, by name; __FILE_NAME__ folds to one
 * of these numbers at compile time. New files go at the end (the ids are
 * part of the event ABI; crates/datapath/src/events.rs lists the same). */
#define WEFT_SOURCE_ID(name) (                       \
	!__builtin_strcmp(name, "lxc.c")       ? 1 :  \
	!__builtin_strcmp(name, "host.c")      ? 2 :  \
	!__builtin_strcmp(name, "overlay.c")   ? 3 :  \
	!__builtin_strcmp(name, "netdev.c")    ? 4 :  \
	!__builtin_strcmp(name, "local.h")     ? 5 :  \
	!__builtin_strcmp(name, "encap.h")     ? 6 :  \
	!__builtin_strcmp(name, "conntrack.h") ? 7 :  \
	!__builtin_strcmp(name, "policy.h")    ? 8 :  \
	!__builtin_strcmp(name, "pipeline.h")  ? 9 :  \
	!__builtin_strcmp(name, "arp.h")       ? 10 : \
	!__builtin_strcmp(name, "icmp.h")      ? 11 : \
	!__builtin_strcmp(name, "lb.h")        ? 12 : \
	!__builtin_strcmp(name, "nat.h")       ? 13 : \
	0)

/* reason | line << 8 | file << 24, negated: always < 0, never a verdict. */
#define DROP(reason)                                                    \
	(-(int)(((__u32)WEFT_SOURCE_ID(__FILE_NAME__) << 24) |          \
		((__u32)(__LINE__ & 0xffff) << 8) | (__u8)(reason)))

static __always_inline __u8 drop_reason(int code)
{
	return (__u32)(-code) & 0xff;
}

/* Packets dropped per reason (summed over CPUs by the agent). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_drops SEC(".maps");

/* Who the dropped packet was from and to, for the event. */
struct drop_ctx {
	__u16 source;    /* endpoint the packet belongs to (0: none) */
	__u16 dst_ep;
	__u32 src_id;
	__u32 dst_id;
};

/* Reports a DROP() result and returns the drop verdict. */
static __always_inline int drop_finish(struct __sk_buff *skb, int code,
				       const struct drop_ctx *d)
{
	__u32 v = (__u32)(-code);
	__u32 reason = v & 0xff;
	struct weft_event *e;
	__u64 *count;

	count = bpf_map_lookup_elem(&weft_drops, &reason);
	if (count)
		*count += 1;
	e = event_start(skb, EVENT_DROP, reason, d->source);
	if (e) {
		e->dst_ep = d->dst_ep;
		e->src_identity = d->src_id;
		e->dst_identity = d->dst_id;
		e->file = v >> 24;
		e->line = (v >> 8) & 0xffff;
		event_submit(e);
	}
	return CTX_ACT_DROP;
}

/* A verdict, or the drop a helper decided: `return finish(skb, ret, &d)`. */
static __always_inline int finish(struct __sk_buff *skb, int ret,
				  const struct drop_ctx *d)
{
	if (ret < 0)
		return drop_finish(skb, ret, d);
	return ret;
}

#endif /* WEFT_DROP_H */
