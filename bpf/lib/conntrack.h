/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking, so that replies of allowed flows pass without policy
 * and every trace can say whether a packet opened a flow or answered one.
 *
 * An entry is keyed by the 5-tuple as first seen and a scope: CT_EGRESS for
 * a flow seen leaving a local endpoint, CT_INGRESS for one seen entering a
 * local endpoint. A packet at scope S finds its flow as
 *   (tuple, S)                    -> established (same way as the first packet)
 *   (reversed tuple, other scope) -> reply
 * so a same-node flow A -> B has two entries (A's egress, B's ingress) and
 * B's answer finds B's ingress entry leaving B and A's egress entry entering
 * A. ICMP errors about a tracked flow are "related". TCP and everything else
 * live in separate LRU maps (crates/agent/src/conntrack.rs garbage-collects
 * them); the maps are pinned and never flushed by the agent, so flows
 * survive an agent restart. */
#ifndef WEFT_CONNTRACK_H
#define WEFT_CONNTRACK_H

#include "common.h"
#include "maps.h"
#include "drop.h"
#include "dbg.h"

/* Scopes (printed as Cilium's "flags" in the lookup debug message). */
#define CT_EGRESS  0
#define CT_INGRESS 1
#define CT_SERVICE 2  /* client -> service address: which backend it got */

/* What a lookup found; also the state in trace events (0: untracked). */
#define CT_NEW         1
#define CT_ESTABLISHED 2
#define CT_REPLY       3
#define CT_RELATED     4

/* ct_entry.flags */
#define CT_F_SEEN_REPLY 0x1  /* a packet went the reply way */
#define CT_F_TX_CLOSING 0x2  /* FIN or RST from the side that opened it */
#define CT_F_RX_CLOSING 0x4  /* FIN or RST from the other side */

/* Default lifetimes in seconds (weft_config.ct_lifetime_* override them). */
#define CT_LIFETIME_TCP   21600  /* established TCP */
#define CT_LIFETIME_SYN   60     /* TCP not yet answered */
#define CT_LIFETIME_CLOSE 10     /* TCP after FIN or RST */
#define CT_LIFETIME_ANY   60     /* everything but TCP */

/* Sizes here are placeholders: the loader sets them from configuration. */
#define WEFT_CT_TCP_MAX 65536
#define WEFT_CT_ANY_MAX 32768

/* Slots of weft_ct_count: entries created by the datapath (monotonic) and
 * the agent's correction after each GC pass; live = created - base. */
#define CT_COUNT_TCP_CREATED 0
#define CT_COUNT_TCP_BASE    1
#define CT_COUNT_ANY_CREATED 2
#define CT_COUNT_ANY_BASE    3

struct ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;    /* ICMP echo: the id, in both ports */
	__be16 dport;
	__u8   proto;
	__u8   scope;    /* CT_EGRESS / CT_INGRESS */
	__u16  pad;
};

struct ct_entry {
	__u64 tx_packets;  /* the way the first packet went */
	__u64 tx_bytes;
	__u64 rx_packets;  /* the reply way */
	__u64 rx_bytes;
	__u32 expires;     /* monotonic seconds (CLOCK_MONOTONIC) */
	__u32 created;
	__u32 peer_id;     /* identity of the other side when it was created */
	__u16 ep_id;       /* the local endpoint */
	__u16 flags;       /* CT_F_* */
	__u16 rev_nat_id;  /* replies are translated back to this service (0: none) */
	__u16 backend_slot; /* CT_SERVICE entries: the frontend slot it had then */
	__u32 backend_id;  /* CT_SERVICE entries: the backend the flow got; a
			    * client's flow to another node's NodePort: that
			    * node's address, which replies come from (lib/lb.h) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_CT_TCP_MAX);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_ct_tcp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_CT_ANY_MAX);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_ct_any SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_ct_count SEC(".maps");

/* A fragmented datagram: later fragments carry no L4 header, so the first
 * one leaves its ports here, keyed by what every fragment carries. */
struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8   proto;
	__u8   pad;
};

struct frag_ports {
	__be16 sport;
	__be16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_frags SEC(".maps");

#define IP_MF     0x2000
#define IP_OFFSET 0x1fff

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

#define ICMP_ECHOREPLY     0
#define ICMP_DEST_UNREACH_ 3
#define ICMP_ECHO          8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

/* One packet as conntrack sees it. */
struct ct_packet {
	struct ct_key key;  /* its flow; for an ICMP error the flow it is about */
	__u32 len;
	__u8  tcp_flags;
	__u8  related;      /* an ICMP error: key is the offending packet's */
	__u16 rev_nat_id;   /* lookup: the found entry's; create: the one to store */
	__u8  later_fragment; /* no L4 header here: ports came from the first */
	__u8  icmp_echo;    /* an echo or echo reply (its id, even 0, is its port) */
	__u8  pad[2];
	__be32 asked_addr;  /* lookup: the found entry's; create: the one to store (lib/lb.h) */
};

static __always_inline __u32 ct_now(void)
{
	return bpf_ktime_get_ns() / 1000000000ULL;
}

static __always_inline void *ct_map(__u8 proto)
{
	return proto == IPPROTO_TCP ? (void *)&weft_ct_tcp : (void *)&weft_ct_any;
}

static __always_inline void ct_key_reverse(struct ct_key *r, const struct ct_key *k)
{
	r->saddr = k->daddr;
	r->daddr = k->saddr;
	r->sport = k->dport;
	r->dport = k->sport;
	r->proto = k->proto;
	r->scope = k->scope ^ 1;
	r->pad = 0;
}

/* The ports of the L4 header at `off` (ICMP echo: the id twice). Returns
 * 1 for an ICMP echo or echo reply (its id, even 0, is its port), 0 for
 * anything else, or a DROP() code. */
static __always_inline int ct_ports(struct __sk_buff *skb, __u32 off, __u8 proto,
				    struct ct_key *k)
{
	__u8 icmp[6];

	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (bpf_skb_load_bytes(skb, off, &k->sport, 4) < 0)
			return DROP(DROP_CT_INVALID_HDR);
		return 0;
	case IPPROTO_ICMP:
		if (bpf_skb_load_bytes(skb, off, icmp, sizeof(icmp)) < 0)
			return DROP(DROP_CT_INVALID_HDR);
		if (icmp[0] == ICMP_ECHO || icmp[0] == ICMP_ECHOREPLY) {
			__builtin_memcpy(&k->sport, &icmp[4], 2);
			k->dport = k->sport;
			return 1;
		}
		return 0;
	default:
		return 0;
	}
}

/* A fragment: the first one records its ports (ICMP and other protocols
 * too: an echo's id), a later one takes them from there. Without the first
 * (lost, or overtaken), a later fragment belongs to no flow: dropped, as
 * the datagram could never be reassembled anyway. */
static __always_inline int ct_fragment(struct __sk_buff *skb, const struct iphdr *ip,
				       __u32 off, struct ct_packet *p)
{
	struct frag_key fk = {
		.saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id, .proto = ip->protocol,
	};
	struct frag_ports *fp;
	struct frag_ports ports;
	int ret;

	if (!(ip->frag_off & bpf_htons(IP_OFFSET))) {
		ret = ct_ports(skb, off, ip->protocol, &p->key);
		if (ret < 0)
			return ret;
		p->icmp_echo = ret;
		ports.sport = p->key.sport;
		/* An echo's id is in both ports; its record marks it an echo
		 * with the id's complement as the second (an id of 0 would
		 * otherwise read as "not an echo"). */
		ports.dport = ret ? p->key.sport ^ 0xffff : p->key.dport;
		bpf_map_update_elem(&weft_frags, &fk, &ports, BPF_ANY);
		return 0;
	}
	fp = bpf_map_lookup_elem(&weft_frags, &fk);
	if (!fp)
		return DROP(DROP_FRAG_NOT_FOUND);
	p->key.sport = fp->sport;
	p->key.dport = fp->dport;
	if (ip->protocol == IPPROTO_ICMP && (__u16)(fp->sport ^ fp->dport) == 0xffff) {
		p->icmp_echo = 1;
		p->key.dport = fp->sport;
	}
	p->later_fragment = 1;
	return 0;
}

/* Fills `p` for the IPv4 packet `ip` seen at `scope`. */
static __always_inline int ct_extract(struct __sk_buff *skb, const struct iphdr *ip,
				      __u8 scope, struct ct_packet *p)
{
	__u32 off = sizeof(struct ethhdr) + ip->ihl * 4;
	struct iphdr inner;
	__u8 type;
	int ret;

	__builtin_memset(p, 0, sizeof(*p));
	p->key.saddr = ip->saddr;
	p->key.daddr = ip->daddr;
	p->key.proto = ip->protocol;
	p->key.scope = scope;
	p->len = skb->len;
	if (ip->frag_off & bpf_htons(IP_OFFSET | IP_MF))
		return ct_fragment(skb, ip, off, p);
	if (ip->protocol == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, off + 13, &p->tcp_flags, 1) < 0)
			return DROP(DROP_CT_INVALID_HDR);
	}
	if (ip->protocol == IPPROTO_ICMP) {
		if (bpf_skb_load_bytes(skb, off, &type, 1) < 0)
			return DROP(DROP_CT_INVALID_HDR);
		if (type == ICMP_DEST_UNREACH_ || type == ICMP_TIME_EXCEEDED ||
		    type == ICMP_PARAMETERPROB) {
			/* The error quotes the packet it is about. */
			if (bpf_skb_load_bytes(skb, off + 8, &inner, sizeof(inner)) < 0 ||
			    inner.ihl < 5)
				return DROP(DROP_CT_INVALID_HDR);
			p->related = 1;
			p->key.saddr = inner.saddr;
			p->key.daddr = inner.daddr;
			p->key.proto = inner.protocol;
			ret = ct_ports(skb, off + 8 + inner.ihl * 4, inner.protocol, &p->key);
			if (ret < 0)
				return ret;
			p->icmp_echo = ret;
			return 0;
		}
	}
	ret = ct_ports(skb, off, ip->protocol, &p->key);
	if (ret < 0)
		return ret;
	p->icmp_echo = ret;
	return 0;
}

/* How long a flow in state `flags` (CT_F_*) lives after its last packet;
 * conntrack and NAT entries (lib/nat.h) age alike. */
static __always_inline __u32 ct_lifetime_for(__u16 flags, __u8 proto)
{
	struct weft_config *cfg = config_get();
	__u32 t;

	if (proto != IPPROTO_TCP) {
		t = cfg ? cfg->ct_lifetime_any : 0;
		return t ? t : CT_LIFETIME_ANY;
	}
	if (flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING)) {
		t = cfg ? cfg->ct_lifetime_close : 0;
		return t ? t : CT_LIFETIME_CLOSE;
	}
	if (!(flags & CT_F_SEEN_REPLY)) {
		t = cfg ? cfg->ct_lifetime_syn : 0;
		return t ? t : CT_LIFETIME_SYN;
	}
	t = cfg ? cfg->ct_lifetime_tcp : 0;
	return t ? t : CT_LIFETIME_TCP;
}

static __always_inline __u32 ct_lifetime(const struct ct_entry *e, __u8 proto)
{
	return ct_lifetime_for(e->flags, proto);
}

/* The flags a packet leaves a flow with: a reply marks it answered, FIN
 * closes one side, RST both. */
static __always_inline __u16 ct_next_flags(__u16 flags, __u8 tcp_flags, int reply)
{
	if (reply)
		flags |= CT_F_SEEN_REPLY;
	if (tcp_flags & TCP_FLAG_RST)
		flags |= CT_F_TX_CLOSING | CT_F_RX_CLOSING;
	else if (tcp_flags & TCP_FLAG_FIN)
		flags |= reply ? CT_F_RX_CLOSING : CT_F_TX_CLOSING;
	return flags;
}

/* Accounts the packet on its entry and moves the entry's expiry. */
static __always_inline void ct_update(struct ct_entry *e, const struct ct_packet *p,
				      int reply)
{
	__u16 flags = ct_next_flags(e->flags, p->tcp_flags, reply);
	__u32 expires;

	if (reply) {
		__sync_fetch_and_add(&e->rx_packets, 1);
		__sync_fetch_and_add(&e->rx_bytes, p->len);
	} else {
		__sync_fetch_and_add(&e->tx_packets, 1);
		__sync_fetch_and_add(&e->tx_bytes, p->len);
	}
	if (flags != e->flags)
		e->flags = flags;
	/* Written at most once a second per flow: the line stays shared. */
	expires = ct_now() + ct_lifetime(e, p->key.proto);
	if (expires != e->expires)
		e->expires = expires;
}

static __always_inline void ct_debug_lookup(struct __sk_buff *skb, __u16 ep,
					    const struct ct_key *k)
{
	send_debug(skb, DBG_CT_LOOKUP, ep, k->saddr, k->daddr,
		   ((__u32)bpf_ntohs(k->sport) << 16) | bpf_ntohs(k->dport));
	send_debug(skb, DBG_CT_LOOKUP2, ep, k->proto, k->scope, 0);
}

/* Finds the packet's flow: returns CT_NEW, CT_ESTABLISHED, CT_REPLY or
 * CT_RELATED. */
static __always_inline int ct_lookup(struct __sk_buff *skb, __u16 ep,
				     struct ct_packet *p)
{
	struct ct_key rev;
	struct ct_entry *e;
	void *map;
	int state = CT_NEW;

	map = ct_map(p->key.proto);
	ct_debug_lookup(skb, ep, &p->key);
	ct_key_reverse(&rev, &p->key);
	if (p->related) {
		/* The offending packet went the other way: it is ours reversed
		 * if we opened the flow, or the flow's own tuple if they did. */
		struct ct_key k = p->key;

		k.scope ^= 1;
		rev.scope ^= 1;
		e = bpf_map_lookup_elem(map, &k);
		if (e) {
			/* About a packet the way the flow's first went (to
			 * the backend, for a service flow): its quote is to
			 * name the service (lib/lb.h lb_related_untranslate). */
			state = CT_RELATED;
			p->rev_nat_id = e->rev_nat_id;
		} else if (bpf_map_lookup_elem(map, &rev)) {
			/* About a reply: quoted as the one who gets the error
			 * sent it. */
			state = CT_RELATED;
		}
		send_debug(skb, DBG_CT_VERDICT, ep, state, 0, 0);
		return state;
	}
	e = bpf_map_lookup_elem(map, &p->key);
	if (e) {
		/* A new SYN on a closed flow reuses its ports: a new flow. */
		if ((p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN &&
		    (e->flags & CT_F_TX_CLOSING) && (e->flags & CT_F_RX_CLOSING)) {
			state = CT_NEW;
		} else {
			send_debug(skb, DBG_CT_FOUND, ep, e->expires - ct_now(), 0, 0);
			ct_update(e, p, 0);
			state = CT_ESTABLISHED;
		}
	} else {
		e = bpf_map_lookup_elem(map, &rev);
		if (e) {
			send_debug(skb, DBG_CT_FOUND, ep, e->expires - ct_now(), 0, 0);
			ct_update(e, p, 1);
			p->rev_nat_id = e->rev_nat_id;
			p->asked_addr = e->rev_nat_id ? e->backend_id : 0;
			state = CT_REPLY;
		}
	}
	send_debug(skb, DBG_CT_VERDICT, ep, state, 0, 0);
	return state;
}

/* Admission of a new entry into the table of `proto`: its counter of
 * created entries (to count the entry once it is in), or NULL when the
 * table holds its configured number of entries: established flows keep
 * theirs rather than the LRU evicting them. Every entry the datapath
 * creates is admitted here (flows, and CT_SERVICE entries: lib/lb.h). */
static __always_inline __u64 *ct_admit(__u8 proto)
{
	struct weft_config *cfg = config_get();
	__u32 created = CT_COUNT_ANY_CREATED, base = CT_COUNT_ANY_BASE;
	__u64 *n_created, *n_base, limit;

	limit = cfg ? cfg->ct_any_limit : 0;
	if (proto == IPPROTO_TCP) {
		created = CT_COUNT_TCP_CREATED;
		base = CT_COUNT_TCP_BASE;
		limit = cfg ? cfg->ct_tcp_limit : 0;
	}
	n_created = bpf_map_lookup_elem(&weft_ct_count, &created);
	n_base = bpf_map_lookup_elem(&weft_ct_count, &base);
	if (!n_created || !n_base)
		return NULL;
	if (limit && *n_created - *n_base >= limit)
		return NULL;
	return n_created;
}

/* Records a new flow (after policy allowed it). Refused, with "CT: Map
 * insertion failed", when the table is full (ct_admit). */
static __always_inline int ct_create(struct __sk_buff *skb, __u16 ep, __u32 peer_id,
				     const struct ct_packet *p)
{
	struct ct_entry e = {};
	__u64 *n_created;

	if (p->related)
		return 0;
	n_created = ct_admit(p->key.proto);
	if (!n_created)
		return DROP(DROP_CT_CREATE_FAILED);
	e.created = ct_now();
	e.peer_id = peer_id;
	e.ep_id = ep;
	e.rev_nat_id = p->rev_nat_id;
	e.backend_id = p->asked_addr;
	e.tx_packets = 1;
	e.tx_bytes = p->len;
	if (p->tcp_flags & TCP_FLAG_RST)
		e.flags = CT_F_TX_CLOSING | CT_F_RX_CLOSING;
	e.expires = e.created + ct_lifetime(&e, p->key.proto);
	if (bpf_map_update_elem(ct_map(p->key.proto), &p->key, &e, BPF_ANY) < 0)
		return DROP(DROP_CT_CREATE_FAILED);
	__sync_fetch_and_add(n_created, 1);
	send_debug(skb, DBG_CT_CREATED, ep, peer_id, 0, 0);
	return 0;
}

#endif /* WEFT_CONNTRACK_H */
