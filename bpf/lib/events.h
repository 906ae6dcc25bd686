/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The one ring buffer every program reports through, and the record it
 * carries. The agent reads it and fans events out to `weft monitor`. */
#ifndef WEFT_EVENTS_H
#define WEFT_EVENTS_H

#include "maps.h"

/* Event types (numbers as in Cilium's monitor API). */
#define EVENT_DROP    1
#define EVENT_DEBUG   2
#define EVENT_CAPTURE 3
#define EVENT_TRACE   4
#define EVENT_POLICY_VERDICT 5  /* subtype: POLICY_MATCH_*; arg1: action | direction << 8 | flags << 16, arg2: protocol, arg3: rule */
#define EVENT_TRACE_SOCK 6      /* subtype: SOCK_EV_*; orig_ip: service, arg1: backend, arg2: service port << 16 | backend port, arg3: protocol; hash: socket cookie */

#define EVENT_CAP_LEN 128

/* One record in weft_events. `subtype` is the observation point (trace), the
 * drop reason (drop) or the debug message code (debug). */
struct weft_event {
	__u8  type;
	__u8  subtype;
	__u16 source;        /* endpoint id the event is about (0: host) */
	__u32 hash;          /* flow hash, printed as "flow 0x..." */
	__u32 ifindex;       /* device the packet was seen on or sent to */
	__u32 src_identity;
	__u32 dst_identity;
	__u16 dst_ep;        /* destination endpoint id, if local */
	__u8  reason;        /* trace: connection state (0 = untracked) */
	__u8  file;          /* drop: source file id (WEFT_SOURCE_ID) */
	__u16 line;          /* drop: source line */
	__u16 cap_len;       /* bytes of the packet copied into data */
	__u32 orig_len;      /* length of the whole packet */
	__u32 arg1;          /* debug arguments */
	__u32 arg2;
	__u32 arg3;
	__u32 orig_ip;       /* trace: address before translation, 0 if none */
	__u64 ktime;
	__u8  data[EVENT_CAP_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_events SEC(".maps");

/* Reserves a record, fills the common part and the packet head. Returns NULL
 * when the ring is full; the caller then simply emits nothing. */
static __always_inline struct weft_event *
event_start(struct __sk_buff *skb, __u8 type, __u8 subtype, __u16 source)
{
	struct weft_event *e;
	__u32 len = skb->len;

	e = bpf_ringbuf_reserve(&weft_events, sizeof(*e), 0);
	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->subtype = subtype;
	e->source = source;
	e->hash = bpf_get_hash_recalc(skb);
	e->ifindex = skb->ifindex;
	e->orig_len = len;
	e->ktime = bpf_ktime_get_ns();
	if (len >= EVENT_CAP_LEN) {
		if (bpf_skb_load_bytes(skb, 0, e->data, EVENT_CAP_LEN) == 0)
			e->cap_len = EVENT_CAP_LEN;
	} else if (len > 0) {
		/* Bounded for the verifier: len is in (0, EVENT_CAP_LEN). */
		__u32 n = len & (EVENT_CAP_LEN - 1);

		if (n > 0 && bpf_skb_load_bytes(skb, 0, e->data, n) == 0)
			e->cap_len = n;
	}
	return e;
}

/* Reserves a record for an event without a packet (socket programs). */
static __always_inline struct weft_event *event_start_nopkt(__u8 type, __u8 subtype)
{
	struct weft_event *e = bpf_ringbuf_reserve(&weft_events, sizeof(*e), 0);

	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->subtype = subtype;
	e->ktime = bpf_ktime_get_ns();
	return e;
}

static __always_inline void event_submit(struct weft_event *e)
{
	bpf_ringbuf_submit(e, 0);
}

#endif /* WEFT_EVENTS_H */
