/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every dropped packet is reported with a numeric reason and the file:line
 * that dropped it. Drops are always emitted: they are rare and precious. */
#ifndef WEFT_DROP_H
#define WEFT_DROP_H

#include "events.h"

/* Source files, for the "file" field of drop events. */
#define WEFT_FILE_LXC  1
#define WEFT_FILE_HOST 2
#define WEFT_FILE_OVERLAY 3
#define WEFT_FILE_NETDEV 4

/* Drop reasons (numbers as in Cilium's monitor API, printed as text by
 * `weft monitor`; crates/datapath/src/events.rs holds the texts). */
#define DROP_INVALID_SMAC    130
#define DROP_INVALID_SIP     132
#define DROP_INVALID         134
#define DROP_UNSUPPORTED_L3  139
#define DROP_WRITE_ERROR     141
#define DROP_NO_TUNNEL_KEY   147
#define DROP_NO_TUNNEL_DEV   160
#define DROP_UNSUPPORTED_L2  166
#define DROP_NO_ENDPOINT     168  /* our own: lxc device without endpoint */
#define DROP_UNROUTABLE      170  /* our own: no local endpoint for a decapsulated packet */
#define DROP_INVALID_IDENTITY 171
#define DROP_UNKNOWN_SENDER  172
#define DROP_FRAG_NEEDED     136
#define DROP_FIB_LOOKUP      169
#define DROP_TTL_EXCEEDED    196

#ifndef WEFT_FILE_ID
#error "define WEFT_FILE_ID before including drop.h"
#endif

static __always_inline int __send_drop(struct __sk_buff *skb, __u8 reason,
				       __u16 source, __u32 src_id,
				       __u32 dst_id, __u16 line)
{
	struct weft_event *e = event_start(skb, EVENT_DROP, reason, source);

	if (e) {
		e->src_identity = src_id;
		e->dst_identity = dst_id;
		e->file = WEFT_FILE_ID;
		e->line = line;
		event_submit(e);
	}
	return CTX_ACT_DROP;
}

/* Reports the drop and returns the drop verdict: `return send_drop(...)`. */
#define send_drop(skb, reason, source, src_id, dst_id) \
	__send_drop(skb, reason, source, src_id, dst_id, __LINE__)

#endif /* WEFT_DROP_H */
