/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The pipeline every packet for or from a pod goes through:
 *
 *   entry program (lxc.c from-container, host.c, overlay.c, netdev.c):
 *       parse and validate, learn who sent it (identity, endpoint)
 *   -> tail call CALL_IPV4_FROM_LXC (a pod's own packet):
 *       conntrack (lib/conntrack.h), identity of the peer, egress policy,
 *       then forward: to a local pod, the host, another node or the stack
 *   -> tail call CALL_IPV4_TO_ENDPOINT (anything for a local pod):
 *       conntrack, ingress policy, delivery (lib/local.h)
 *
 * Ingress is thus enforced once, at delivery, whichever way the packet came.
 * What one stage learned travels to the next in a per-CPU scratch record:
 * a tc program runs to completion on one CPU (redirects happen after it
 * returns), so nothing else can use the record in between. */
#ifndef WEFT_PIPELINE_H
#define WEFT_PIPELINE_H

#include "common.h"
#include "maps.h"
#include "drop.h"

/* Slots of weft_calls; the stages are programs of lxc.c, put there by the
 * agent's loader (crates/datapath/src/loader.rs, STAGES). */
#define CALL_IPV4_FROM_LXC    0
#define CALL_IPV4_TO_ENDPOINT 1
#define CALL_MAX              8

/* Pinned, so the stages stay reachable while no agent runs (the kernel
 * empties an unpinned program array when its last user fd closes). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, CALL_MAX);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_calls SEC(".maps");

/* How the delivery stage may hand the packet to a pod: from a tc ingress
 * hook straight into the pod's namespace (bpf_redirect_peer), from an egress
 * hook only to the host-side device. */
#define HOOK_INGRESS 0
#define HOOK_EGRESS  1

/* What one stage tells the next about the packet in flight. */
struct pipeline_state {
	__u32 src_id;    /* security identity of the sender */
	__u32 dst_id;    /* of the receiver, once known */
	__u16 src_ep;    /* local endpoint that sent it (0: not a local pod) */
	__u16 dst_ep;    /* local endpoint it is for (0: none) */
	__u8  hook;      /* HOOK_* of the entry program */
	__u8  ct_state;  /* CT_* of the sender's side, for traces */
	__u16 rev_nat_id; /* a NodePort translation the new flow's entry keeps */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pipeline_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_state SEC(".maps");

static __always_inline struct pipeline_state *pipeline_state(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&weft_state, &zero);
}

/* Starts the record for a packet entering the pipeline. */
static __always_inline struct pipeline_state *
pipeline_start(__u16 src_ep, __u32 src_id, __u8 hook)
{
	struct pipeline_state *st = pipeline_state();

	if (!st)
		return NULL;
	st->src_id = src_id;
	st->dst_id = 0;
	st->src_ep = src_ep;
	st->dst_ep = 0;
	st->hook = hook;
	st->ct_state = 0;
	st->rev_nat_id = 0;
	return st;
}

/* Continues in stage `slot`. Evaluates to a drop only when the slot is
 * empty (no agent ever loaded the stage). */
#define tail_call_slot(skb, slot)                         \
	({                                                \
		bpf_tail_call(skb, &weft_calls, slot);    \
		DROP(DROP_MISSED_TAIL_CALL);              \
	})

/* Test builds that need to see what from-lxc did to the packet
 * (bpf/tests/probe_lxc.c reads the tunnel key it set) define
 * WEFT_INLINE_STAGES: that stage (lxc.c) is then called directly, chosen
 * by the slot's name at compile time; the delivery stage stays a tail
 * call (inlined too, the program would be past the verifier's limit). */
#ifdef WEFT_INLINE_STAGES
static __always_inline int stage_ipv4_from_lxc(struct __sk_buff *skb);
#define invoke_CALL_IPV4_FROM_LXC(skb)    stage_ipv4_from_lxc(skb)
#define invoke_CALL_IPV4_TO_ENDPOINT(skb) tail_call_slot(skb, CALL_IPV4_TO_ENDPOINT)
#define tail_call_stage(skb, slot)        invoke_##slot(skb)
#else
#define tail_call_stage(skb, slot)        tail_call_slot(skb, slot)
#endif

/* On to the delivery stage (lxc.c ipv4_to_endpoint) for the local
 * endpoint `dst`, from a source of identity d->src_id: what every program
 * does with a packet for a pod of this node. */
static __always_inline int to_delivery_stage(struct __sk_buff *skb, struct drop_ctx *d,
					     const struct endpoint_info *dst)
{
	d->dst_ep = dst->ep_id;
	d->dst_id = dst->sec_identity;
	if (!pipeline_start(0, d->src_id, HOOK_INGRESS))
		return DROP(DROP_NO_STATE);
	return tail_call_stage(skb, CALL_IPV4_TO_ENDPOINT);
}

#endif /* WEFT_PIPELINE_H */
