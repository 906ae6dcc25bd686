/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Trace events at fixed observation points, so `weft monitor` can follow a
 * packet hop by hop. Emitted only while a monitor listens (CFG_F_TRACE). */
#ifndef WEFT_TRACE_H
#define WEFT_TRACE_H

#include "events.h"

/* Observation points (numbers as Cilium's enum trace_point). */
#define TRACE_TO_ENDPOINT   0
#define TRACE_TO_PROXY      1
#define TRACE_TO_HOST       2
#define TRACE_TO_STACK      3
#define TRACE_TO_OVERLAY    4
#define TRACE_FROM_ENDPOINT 5
#define TRACE_FROM_PROXY    6
#define TRACE_FROM_HOST     7
#define TRACE_FROM_STACK    8
#define TRACE_FROM_OVERLAY  9
#define TRACE_FROM_NETWORK  10
#define TRACE_TO_NETWORK    11

/* The trace's "state": 0 untracked, else the CT_* of lib/conntrack.h. */
#define TRACE_REASON_UNTRACKED 0

struct trace_ctx {
	__u16 source;     /* endpoint the packet belongs to */
	__u16 dst_ep;     /* destination endpoint, if local */
	__u32 src_id;
	__u32 dst_id;
	__u32 ifindex;    /* 0: the device the program runs on */
	__u8  state;      /* CT_* (0: untracked) */
	__be32 orig_ip;   /* the service address before translation, 0 if none */
};

static __always_inline void send_trace(struct __sk_buff *skb, __u8 point,
				       const struct trace_ctx *t)
{
	struct weft_event *e;

	if (!(config_flags() & CFG_F_TRACE))
		return;
	e = event_start(skb, EVENT_TRACE, point, t->source);
	if (!e)
		return;
	e->dst_ep = t->dst_ep;
	e->src_identity = t->src_id;
	e->dst_identity = t->dst_id;
	if (t->ifindex)
		e->ifindex = t->ifindex;
	e->reason = t->state;
	e->orig_ip = t->orig_ip;
	event_submit(e);
}

#endif /* WEFT_TRACE_H */
