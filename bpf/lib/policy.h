/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Policy by identity, decided on the first packet of a flow (conntrack
 * carries the rest): at the source endpoint on egress, at the destination
 * endpoint on ingress.
 *
 * The agent compiles Kubernetes and Calico policies (crates/policy) into
 * one LPM trie, weft_policy, keyed by endpoint, direction, peer and port.
 * A peer is an identity, a namespace (every identity of it), or any; a
 * CIDR class narrows it to addresses inside a policy's ipBlock/nets (the
 * longest such CIDR holding the address, from weft_policy_cidr), pods'
 * addresses included. Looking up the most specific peer first keeps
 * allow-all and namespace-wide rules at one entry per endpoint instead of
 * one per identity:
 *     (identity, class) (identity) (namespace, class) (namespace)
 *     (any, class) (any)
 * The first hit decides; in each, the longest protocol/port prefix wins.
 * No hit on an enforcing endpoint: denied. */
#ifndef WEFT_POLICY_H
#define WEFT_POLICY_H

#include "common.h"
#include "maps.h"
#include "events.h"
#include "drop.h"

#define POLICY_INGRESS 0
#define POLICY_EGRESS  1

#define PEER_ANY       0
#define PEER_NAMESPACE 1
#define PEER_IDENTITY  2

#define POLICY_ALLOW 1
#define POLICY_DENY  2

#define POLICY_F_LOG 0x1   /* a Calico Log rule matched on the way */

/* Bits of struct policy_key after prefixlen that every entry matches in
 * full (ep_id .. pad); then 8 for the protocol and up to 16 for the port. */
#define POLICY_STATIC_BITS 104
#define POLICY_FULL_BITS   128

/* Match kinds of verdict events (Cilium's words). */
#define POLICY_MATCH_NONE   0  /* no entry: denied by default */
#define POLICY_MATCH_L3     1  /* L3-Only */
#define POLICY_MATCH_L3_L4  2  /* L3-L4 */
#define POLICY_MATCH_L4     3  /* L4-Only */
#define POLICY_MATCH_ALL    4  /* all */

#ifndef WEFT_POLICY_MAX
#define WEFT_POLICY_MAX 262144
#endif

struct policy_key {
	__u32 prefixlen;
	__u16 ep_id;
	__u8  direction;   /* POLICY_INGRESS / POLICY_EGRESS */
	__u8  peer_kind;   /* PEER_* */
	__u32 peer;        /* identity, namespace id, or 0 */
	__u32 cidr_class;  /* 0: any address */
	__u8  pad;
	__u8  proto;
	__be16 dport;      /* network order: the prefix covers its high bits */
};

struct policy_entry {
	__u8  action;      /* POLICY_ALLOW / POLICY_DENY */
	__u8  flags;       /* POLICY_F_* */
	__u16 prefixlen;   /* the key's: a lookup does not say which prefix hit */
	__u32 rule;        /* the agent's id of the rule that decided */
};

/* Which directions of an endpoint enforce policy (absent: neither). */
struct policy_endpoint {
	__u8  ingress;
	__u8  egress;
	__u16 pad;
	__u32 revision;    /* of the compiled policy, for `weft endpoint list` */
};

/* An identity's namespace (pods only; 0 is "not a pod"). */
struct identity_info {
	__u16 namespace_id;
	__u16 pad;
};

struct policy_cidr_key {
	__u32 prefixlen;
	__u32 ip4;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, WEFT_POLICY_MAX);
	__type(key, struct policy_key);
	__type(value, struct policy_entry);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_ENDPOINTS_MAX);
	__type(key, __u16);
	__type(value, struct policy_endpoint);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_policy_ep SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_ENDPOINTS_MAX);
	__type(key, __u32);
	__type(value, struct identity_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_identity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__type(key, struct policy_cidr_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_policy_cidr SEC(".maps");

/* The flow a decision is about. */
struct policy_flow {
	__u16 ep_id;       /* the local endpoint */
	__u8  direction;
	__u8  proto;
	__u32 peer_id;     /* identity of the other side */
	__be32 peer_addr;
	__be16 dport;
	__u16 pad;
};

/* What decided, for the verdict event. */
struct policy_verdict {
	__u8  action;
	__u8  match;       /* POLICY_MATCH_* */
	__u8  flags;
	__u8  pad;
	__u32 rule;
};

static __always_inline struct policy_entry *
policy_lookup(struct policy_key *k, __u8 kind, __u32 peer, __u32 cidr_class)
{
	k->peer_kind = kind;
	k->peer = peer;
	k->cidr_class = cidr_class;
	return bpf_map_lookup_elem(&weft_policy, k);
}

static __always_inline __u8 policy_match_kind(__u8 kind, __u32 cidr_class, __u32 prefixlen)
{
	int l3 = kind != PEER_ANY || cidr_class != 0;
	int l4 = prefixlen > POLICY_STATIC_BITS;

	if (l3)
		return l4 ? POLICY_MATCH_L3_L4 : POLICY_MATCH_L3;
	return l4 ? POLICY_MATCH_L4 : POLICY_MATCH_ALL;
}

/* Emits "Policy verdict log" for the first packet of a flow, while a
 * monitor listens (a denied flow is also a drop, which is always sent). */
static __always_inline void send_policy_verdict(struct __sk_buff *skb, const struct policy_flow *f,
						const struct policy_verdict *v)
{
	struct weft_event *e;

	if (!(config_flags() & CFG_F_TRACE))
		return;
	e = event_start(skb, EVENT_POLICY_VERDICT, v->match, f->ep_id);
	if (!e)
		return;
	e->src_identity = f->peer_id;
	e->arg1 = v->action | (__u32)f->direction << 8 | (__u32)v->flags << 16;
	e->arg2 = f->proto;
	e->arg3 = v->rule;
	event_submit(e);
}

/* Decides a new flow: 0 when it may pass, DROP(DROP_POLICY) when not.
 * Endpoints that do not enforce the direction pass without a lookup.
 *
 * A global function, not inlined: the verifier checks it once, on its
 * own, and its callers see only its result (inlined, its paths — peer
 * kinds, ports, verdict events — multiplied those of from-lxc). */
static __always_inline int policy_decide(struct __sk_buff *skb, const struct policy_flow *f)
{
	struct policy_verdict v = { .action = POLICY_DENY, .match = POLICY_MATCH_NONE };
	struct policy_cidr_key ck = { .prefixlen = 32, .ip4 = f->peer_addr };
	struct policy_key k = {
		.prefixlen = POLICY_FULL_BITS,
		.ep_id = f->ep_id,
		.direction = f->direction,
		.proto = f->proto,
		.dport = f->dport,
	};
	struct policy_endpoint *pe = bpf_map_lookup_elem(&weft_policy_ep, &f->ep_id);
	struct identity_info *id;
	struct policy_entry *hit = 0;
	__u32 class = 0, *cp;
	__u16 ns = 0;
	__u8 kind = PEER_ANY;

	if (!pe || !(f->direction == POLICY_INGRESS ? pe->ingress : pe->egress))
		return 0;
	id = bpf_map_lookup_elem(&weft_identity, &f->peer_id);
	if (id)
		ns = id->namespace_id;
	cp = bpf_map_lookup_elem(&weft_policy_cidr, &ck);
	if (cp)
		class = *cp;

	if (class && (hit = policy_lookup(&k, PEER_IDENTITY, f->peer_id, class)))
		kind = PEER_IDENTITY;
	else if ((hit = policy_lookup(&k, PEER_IDENTITY, f->peer_id, 0)))
		kind = PEER_IDENTITY, class = 0;
	else if (ns && class && (hit = policy_lookup(&k, PEER_NAMESPACE, ns, class)))
		kind = PEER_NAMESPACE;
	else if (ns && (hit = policy_lookup(&k, PEER_NAMESPACE, ns, 0)))
		kind = PEER_NAMESPACE, class = 0;
	else if (class && (hit = policy_lookup(&k, PEER_ANY, 0, class)))
		kind = PEER_ANY;
	else if ((hit = policy_lookup(&k, PEER_ANY, 0, 0)))
		kind = PEER_ANY, class = 0;

	if (hit) {
		v.action = hit->action;
		v.flags = hit->flags;
		v.rule = hit->rule;
		v.match = policy_match_kind(kind, class, hit->prefixlen);
	}
	send_policy_verdict(skb, f, &v);
	if (v.action != POLICY_ALLOW)
		return DROP(DROP_POLICY);
	return 0;
}

__attribute__((noinline)) int policy_check(struct __sk_buff *skb, const struct policy_flow *f)
{
	if (!f)
		return DROP(DROP_INVALID);
	return policy_decide(skb, f);
}

#endif /* WEFT_POLICY_H */
