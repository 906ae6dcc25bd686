/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Debug events: why the datapath chose what it chose (identity resolution,
 * local delivery, ARP answers). Emitted only with CFG_F_DEBUG (monitor -v). */
#ifndef WEFT_DBG_H
#define WEFT_DBG_H

#include "events.h"

/* Debug message codes; texts live in crates/datapath/src/events.rs. */
#define DBG_IP_ID_MAP_SUCCEED4 1  /* arg1 = addr, arg2 = identity */
#define DBG_IP_ID_MAP_FAILED4  2  /* arg1 = addr */
#define DBG_LOCAL_DELIVERY     3  /* arg1 = ifindex, arg2 = seclabel, arg3 = ep id */
#define DBG_ARP_REPLY          4  /* arg1 = target addr, arg2 = ifindex */
#define DBG_TO_HOST            5  /* arg1 = addr */
#define DBG_TO_STACK           6  /* arg1 = addr */
#define DBG_ENCAP              7  /* arg1 = node addr, arg2 = seclabel */
#define DBG_DECAP              8  /* arg1 = outer source, arg2 = seclabel (VNI) */
#define DBG_ROUTE              9  /* arg1 = node addr, arg2 = seclabel (native) */
#define DBG_FRAG_NEEDED       10  /* arg1 = MTU the packet must fit */
#define DBG_CT_LOOKUP         11  /* arg1 = saddr, arg2 = daddr, arg3 = sport << 16 | dport */
#define DBG_CT_LOOKUP2        12  /* arg1 = protocol, arg2 = scope */
#define DBG_CT_VERDICT        13  /* arg1 = CT_* state */
#define DBG_CT_CREATED        14  /* arg1 = identity of the peer */
#define DBG_CT_FOUND          15  /* arg1 = seconds the entry has left */
#define DBG_LB_LOOKUP         16  /* arg1 = service addr, arg2 = port << 16 | proto, arg3 = backend slots */
#define DBG_LB_BACKEND        17  /* arg1 = backend addr, arg2 = port, arg3 = backend id */
#define DBG_LB_REVNAT         18  /* arg1 = service addr, arg2 = port, arg3 = rev-NAT id */
#define DBG_SNAT              19  /* arg1 = original source, arg2 = new source, arg3 = old port << 16 | new port */
#define DBG_SNAT_REVERSE      20  /* arg1 = translated dest, arg2 = original dest, arg3 = old port << 16 | new port */

static __always_inline void send_debug(struct __sk_buff *skb, __u8 code,
				       __u16 source, __u32 a1, __u32 a2,
				       __u32 a3)
{
	struct weft_event *e;

	if (!(config_flags() & CFG_F_DEBUG))
		return;
	e = event_start(skb, EVENT_DEBUG, code, source);
	if (!e)
		return;
	e->arg1 = a1;
	e->arg2 = a2;
	e->arg3 = a3;
	event_submit(e);
}

/* A copy of the packet as delivered (capture event), for `monitor -v`. */
static __always_inline void send_capture(struct __sk_buff *skb, __u16 source,
					 __u32 ifindex)
{
	struct weft_event *e;

	if (!(config_flags() & CFG_F_DEBUG))
		return;
	e = event_start(skb, EVENT_CAPTURE, 0, source);
	if (!e)
		return;
	e->ifindex = ifindex;
	event_submit(e);
}

#endif /* WEFT_DBG_H */
