/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Source NAT: a flow that leaves the node as the node's own address.
 *  - masquerade: a pod's flow to an address outside the cluster (lxc.c);
 *  - a NodePort connection sent on to a backend on another node
 *    (externalTrafficPolicy Cluster, netdev.c): the backend answers the
 *    node, which turns the answer back into the service's.
 *
 * Each translated flow has two entries in weft_nat. NAT_OUT is keyed by
 * the flow's tuple as it left the pod (or the client) and holds the node
 * address and port it was given; NAT_IN is keyed by the reply's tuple as
 * it arrives (remote -> node:port) and holds the original address and
 * port, and for a NodePort the service's reverse-NAT id. A port belongs
 * to a flow from the moment its NAT_IN entry is inserted (BPF_NOEXIST), so
 * two flows never share one.
 *
 * Ports come from weft_config.snat_port_min..max, which the agent keeps
 * clear of the node port range and of the node's own ephemeral ports, so a
 * reply is never ambiguous. The allocator starts at the flow's own port
 * when it is in the range, else anywhere, and probes runs of NAT_RUN ports
 * at up to NAT_TRIES / NAT_RUN places across the range (all of it when it
 * is small): a busy range is searched, not given up on after a few random
 * tries. A flow that truly finds no port is dropped with DROP_NAT_NO_PORT
 * and counted.
 *
 * weft_nat is a plain hash, never an LRU: a full table refuses new flows
 * (DROP_NAT_TABLE_FULL) rather than evicting a live flow's translation.
 * Entries age as conntrack's do (ct_lifetime_for); an expired entry's port
 * can be taken by a new flow at once (the expiry is claimed with a
 * compare-and-swap, so only one flow wins it), and the agent deletes
 * expired entries (crates/agent/src/conntrack.rs). */
#ifndef WEFT_NAT_H
#define WEFT_NAT_H

#include "common.h"
#include "maps.h"
#include "drop.h"
#include "dbg.h"
#include "conntrack.h"
#include "trace.h"
#include "pipeline.h"
#include "lb.h"
#include "icmp.h"

#ifndef WEFT_NAT_MAX
#define WEFT_NAT_MAX 131072
#endif

#define NAT_OUT 0
#define NAT_IN  1

#define NAT_TRIES 128  /* ports tried for one new flow */
#define NAT_RUN   32   /* consecutive ports tried from one random place */

struct nat_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;    /* ICMP echo: the id */
	__be16 dport;    /* ICMP echo: the id */
	__u8   proto;
	__u8   dir;      /* NAT_OUT / NAT_IN */
	__u16  pad;
};

struct nat_entry {
	__be32 addr;       /* OUT: the node address; IN: the original source */
	__be16 port;       /* network order */
	__u16  rev_nat_id; /* a NodePort flow's: replies answer as this service */
	__u32  created;    /* monotonic seconds */
	__u32  expires;    /* monotonic seconds */
	__u16  flags;      /* CT_F_*: the flow's state, for its lifetime */
	__u16  pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_NAT_MAX);
	__type(key, struct nat_key);
	__type(value, struct nat_entry);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_nat SEC(".maps");

static __always_inline int nat_expired(const struct nat_entry *e, __u32 now)
{
	return (__s32)(now - e->expires) > 0;
}

/* Whether SNAT can translate this protocol: TCP, UDP, ICMP echo (an
 * error's quote of an echo: by its id, which is then not 0). */
static __always_inline int nat_proto_ok(const struct ct_packet *p)
{
	return p->key.proto == IPPROTO_TCP || p->key.proto == IPPROTO_UDP ||
	       (p->key.proto == IPPROTO_ICMP && (p->icmp_echo || p->key.sport));
}

/* Where the L4 checksum is (ports: l4_port_off, lib/icmp.h). */
static __always_inline __u32 nat_csum_off(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return __builtin_offsetof(struct tcphdr, check);
	if (proto == IPPROTO_UDP)
		return __builtin_offsetof(struct udphdr, check);
	return 2; /* ICMP */
}

/* Rewrites the source (or destination) address and port of the packet,
 * fixing the IPv4 and L4 checksums. ICMP's checksum covers no pseudo
 * header: only the id changes it. A later fragment (`l4` 0) has only its
 * address rewritten. */
static __always_inline int nat_rewrite(struct __sk_buff *skb, __u32 l4_off, __u8 proto, int dst, int l4,
				       __be32 old_ip, __be32 new_ip, __be16 old_port, __be16 new_port)
{
	__u32 ip_off = sizeof(struct ethhdr) + (dst ? __builtin_offsetof(struct iphdr, daddr)
						    : __builtin_offsetof(struct iphdr, saddr));
	__u32 csum = l4_off + nat_csum_off(proto);
	__u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (l4 && proto != IPPROTO_ICMP &&
	    bpf_l4_csum_replace(skb, csum, old_ip, new_ip, BPF_F_PSEUDO_HDR | mangled | sizeof(__be32)) < 0)
		return -1;
	if (l4 && bpf_l4_csum_replace(skb, csum, old_port, new_port, mangled | sizeof(__be16)) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, sizeof(struct ethhdr) + __builtin_offsetof(struct iphdr, check),
				old_ip, new_ip, sizeof(__be32)) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, ip_off, &new_ip, sizeof(new_ip), 0) < 0)
		return -1;
	if (l4 && bpf_skb_store_bytes(skb, l4_off + l4_port_off(proto, dst), &new_port, sizeof(new_port), 0) < 0)
		return -1;
	return 0;
}

/* Accounts a packet of the flow on `e`: its state and expiry. Returns
 * whether either changed (the partner entry then follows). */
static __always_inline int nat_touch(struct nat_entry *e, const struct ct_packet *p, int reply, __u32 now)
{
	__u16 closed = CT_F_TX_CLOSING | CT_F_RX_CLOSING;
	__u16 flags = e->flags;
	__u32 expires;

	/* A new SYN on a closed flow's tuple opens a new flow: its state
	 * starts over (as conntrack's does). */
	if ((p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN && (flags & closed))
		flags = 0;
	flags = ct_next_flags(flags, p->tcp_flags, reply);

	expires = now + ct_lifetime_for(flags, p->key.proto);
	if (flags == e->flags && expires == e->expires)
		return 0;
	e->flags = flags;
	e->expires = expires;
	return 1;
}

/* The NAT_OUT key of the flow whose NAT_IN entry is (`in`, `e`). */
static __always_inline void nat_out_key(struct nat_key *out, const struct nat_key *in,
					const struct nat_entry *e)
{
	out->saddr = e->addr;
	out->daddr = in->saddr;
	out->sport = e->port;
	out->dport = in->proto == IPPROTO_ICMP ? e->port : in->sport;
	out->proto = in->proto;
	out->dir = NAT_OUT;
	out->pad = 0;
}

/* The NAT_IN key of the flow leaving as `out` from `node`:`port` (an
 * echo reply carries the new id in both places). */
static __always_inline void nat_in_key(struct nat_key *in, const struct nat_key *out, __be32 node, __be16 port)
{
	in->saddr = out->daddr;
	in->daddr = node;
	in->sport = out->proto == IPPROTO_ICMP ? port : out->dport;
	in->dport = port;
	in->proto = out->proto;
	in->dir = NAT_IN;
	in->pad = 0;
}

/* Keeps the other entry of the flow alive as long as this one. */
static __always_inline struct nat_entry *nat_touch_partner(const struct nat_key *k, __u32 expires, __u16 flags)
{
	struct nat_entry *e = bpf_map_lookup_elem(&weft_nat, k);

	if (e) {
		e->expires = expires;
		e->flags = flags;
	}
	return e;
}

/* Puts back a flow's NAT_IN entry that the agent's GC deleted while the
 * flow took the expired port again (it read the entry just before). Returns
 * whether the port is still this flow's. */
static __always_inline int nat_restore_in(const struct nat_key *in, const struct nat_key *out,
					  const struct nat_entry *e)
{
	struct nat_entry back = { .addr = out->saddr, .port = out->sport, .rev_nat_id = e->rev_nat_id,
				  .created = e->created, .expires = e->expires, .flags = e->flags };

	return !bpf_map_update_elem(&weft_nat, in, &back, BPF_NOEXIST);
}

/* Takes the port of NAT_IN entry `k` for the flow described by `want`:
 * inserts it, or claims it when its flow has expired (then the old flow's
 * NAT_OUT entry goes), or finds it already this flow's. Returns 0 when the
 * port is ours, 1 when another live flow has it, < 0 when the table is
 * full. */
static __always_inline int nat_claim(const struct nat_key *k, const struct nat_entry *want, __u32 now)
{
	struct nat_entry *old, *se;
	struct nat_key stale;
	__u32 seen;

	if (!bpf_map_update_elem(&weft_nat, k, want, BPF_NOEXIST))
		return 0;
	old = bpf_map_lookup_elem(&weft_nat, k);
	if (!old)
		return -1; /* not there, yet not insertable: the table is full */
	if (old->addr == want->addr && old->port == want->port) {
		/* This flow's own (its NAT_OUT entry expired first): it
		 * starts over. */
		old->expires = want->expires;
		old->flags = want->flags;
		old->created = want->created;
		old->rev_nat_id = want->rev_nat_id;
		return 0;
	}
	seen = old->expires;
	/* A closed TCP flow's port is not taken before its entry expires
	 * (the closing lifetime): the far end may still hold the tuple in
	 * TIME_WAIT and answer a new SYN on it with a stale ACK (measured:
	 * taking it a second after the close cost one SYN retransmission in
	 * twenty connections). */
	if ((__s32)(now - seen) <= 0)
		return 1;
	if (__sync_val_compare_and_swap(&old->expires, seen, want->expires) != seen)
		return 1; /* another CPU claimed it first */
	/* The old flow's NAT_OUT entry goes too, if it still names this
	 * port (the flow may have moved to another port since). */
	nat_out_key(&stale, k, old);
	se = bpf_map_lookup_elem(&weft_nat, &stale);
	if (se && se->addr == k->daddr && se->port == k->dport)
		bpf_map_delete_elem(&weft_nat, &stale);
	old->addr = want->addr;
	old->port = want->port;
	old->rev_nat_id = want->rev_nat_id;
	old->created = want->created;
	old->flags = want->flags;
	return 0;
}

/* A fixed spread of an address over the port range (Knuth's
 * multiplicative hash). */
static __always_inline __u32 nat_addr_hash(__be32 addr)
{
	return (bpf_ntohl(addr) * 2654435761u) >> 16;
}

/* What the probing loop of nat_alloc works on. */
struct nat_probe {
	struct nat_key in;      /* the NAT_IN key being tried */
	struct nat_entry want;  /* what it should hold */
	__u32 now;
	__u32 min;              /* the range: min .. min + n - 1 */
	__u32 n;
	__u32 off;              /* where the current run starts */
	int result;             /* 0: a port found; < 0: DROP() code */
};

/* One try of nat_alloc (a bpf_loop callback: the verifier checks it once,
 * not once per try). Returns 1 to stop. */
static long nat_probe_one(__u32 i, void *arg)
{
	struct nat_probe *c = arg;
	__u32 step = i;
	int ret;

	if (i >= c->n)
		return 1;
	if (c->n > NAT_TRIES) {
		/* A new run somewhere else in a large range. */
		if (i && !(i % NAT_RUN))
			c->off = bpf_get_prandom_u32() % c->n;
		step = i % NAT_RUN;
	}
	c->in.dport = bpf_htons((__u16)(c->min + (c->off + step) % c->n));
	if (c->in.proto == IPPROTO_ICMP)
		c->in.sport = c->in.dport; /* an echo reply carries the new id only */
	ret = nat_claim(&c->in, &c->want, c->now);
	if (ret < 0) {
		c->result = DROP(DROP_NAT_TABLE_FULL);
		return 1;
	}
	if (!ret) {
		c->result = 0;
		return 1;
	}
	return 0;
}

/* A port for the new flow `out` (a NAT_OUT key) leaving as `node`: its
 * NAT_IN entry is in place when this returns 0, with the port in `*port`. */
static __always_inline int nat_alloc(const struct nat_key *out, __be32 node, __u16 rev_nat_id,
				     const struct ct_packet *p, __u32 now, __be16 *port)
{
	struct weft_config *cfg = config_get();
	int ret;
	struct nat_probe c = {
		.in = { .saddr = out->daddr, .daddr = node, .sport = out->dport, .proto = out->proto,
			.dir = NAT_IN },
		.want = { .addr = out->saddr, .port = out->sport, .rev_nat_id = rev_nat_id },
		.now = now,
		.result = DROP(DROP_NAT_NO_PORT),
	};

	if (!cfg || !cfg->snat_port_min || cfg->snat_port_max < cfg->snat_port_min)
		return DROP(DROP_NAT_NO_PORT);
	c.min = cfg->snat_port_min;
	c.n = cfg->snat_port_max - c.min + 1;
	c.want.created = now;
	c.want.flags = ct_next_flags(0, p->tcp_flags, 0);
	c.want.expires = now + ct_lifetime_for(c.want.flags, out->proto);
	/* Keep the flow's own port when it is free, as Linux does; else start
	 * where this pod's port always starts: a port the pod uses again
	 * (after its flow closed) meets the far end with the same tuple as
	 * before, whose TIME_WAIT the far end then takes over (the pod's new
	 * sequence number follows the old one). A random port would often
	 * hit a TIME_WAIT of another flow of the pod, and its SYN be lost
	 * (measured: connections to one server collapsed from 6,000/s to 650/s
	 * once its TIME_WAITs covered the range). One pod's ports map one to
	 * one while they fit the range. */
	c.off = bpf_ntohs(out->sport) - c.min;
	if (c.off >= c.n)
		c.off = (bpf_ntohs(out->sport) + nat_addr_hash(out->saddr)) % c.n;
	bpf_loop(NAT_TRIES, nat_probe_one, &c, 0);
	/* The callback wrote `c`: read it from the stack again. */
	asm volatile("" ::: "memory");
	ret = *(volatile int *)&c.result;
	if (!ret)
		*port = c.in.dport;
	return ret;
}

/* The flow `p` (its tuple as it is now) leaves as the node: its source
 * becomes the node's address and a port of the flow's own, kept for the
 * flow's life. Returns 0 or a DROP() code.
 *
 * A global function, as lb_translate: verified once, and its locals (the
 * port search's) live in its own frame, not in every caller's. */
__attribute__((noinline)) int snat_out(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p,
				       __u16 rev_nat_id, __u16 ep)
{
	struct weft_config *cfg = config_get();
	struct nat_key k = {};
	struct nat_entry *e, fresh = {};
	struct nat_key in;
	__u32 now = ct_now();
	__be16 port = 0;
	__be32 node;
	int ret;

	if (!p || !nat_proto_ok(p))
		return DROP(DROP_NAT_UNSUPPORTED);
	if (!cfg)
		return DROP(DROP_NAT_NO_PORT);
	node = cfg->node_ip4;
	k.saddr = p->key.saddr;
	k.daddr = p->key.daddr;
	k.sport = p->key.sport;
	k.dport = p->key.dport;
	k.proto = p->key.proto;
	k.dir = NAT_OUT;
	e = bpf_map_lookup_elem(&weft_nat, &k);
	if (e && !nat_expired(e, now)) {
		if (nat_touch(e, p, 0, now)) {
			nat_in_key(&in, &k, e->addr, e->port);
			if (!nat_touch_partner(&in, e->expires, e->flags) && !nat_restore_in(&in, &k, e)) {
				/* The port went to another flow: this one
				 * starts over with a new port. */
				bpf_map_delete_elem(&weft_nat, &k);
				return DROP(DROP_NAT_NO_PORT);
			}
		}
		port = e->port;
	} else {
		/* A later fragment never opens a flow: its first did. */
		ret = nat_alloc(&k, node, rev_nat_id, p, now, &port);
		if (ret < 0)
			return ret;
		fresh.addr = node;
		fresh.port = port;
		fresh.rev_nat_id = rev_nat_id;
		fresh.created = now;
		fresh.flags = ct_next_flags(0, p->tcp_flags, 0);
		fresh.expires = now + ct_lifetime_for(fresh.flags, k.proto);
		if (bpf_map_update_elem(&weft_nat, &k, &fresh, BPF_ANY) < 0) {
			nat_in_key(&in, &k, node, port);
			bpf_map_delete_elem(&weft_nat, &in);
			return DROP(DROP_NAT_TABLE_FULL);
		}
	}
	send_debug(skb, DBG_SNAT, ep, k.saddr, node,
		   ((__u32)bpf_ntohs(k.sport) << 16) | bpf_ntohs(port));
	if (nat_rewrite(skb, l4_off, k.proto, 0, !p->later_fragment, k.saddr, node, k.sport, port) < 0)
		return DROP(DROP_WRITE_ERROR);
	return 0;
}

/* A reply to a translated flow, arriving as `p` (remote -> node:port):
 * its destination becomes the original source again. Returns 0 (and the
 * flow's reverse-NAT id in `*rev_nat_id`), 1 when the packet belongs to no
 * translated flow, or a DROP() code. */
static __always_inline int snat_in(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p,
				   __u16 *rev_nat_id)
{
	struct nat_key k = { .saddr = p->key.saddr, .daddr = p->key.daddr, .sport = p->key.sport,
			     .dport = p->key.dport, .proto = p->key.proto, .dir = NAT_IN };
	struct nat_key out;
	struct nat_entry *e;
	__u32 now = ct_now();

	if (!nat_proto_ok(p))
		return 1;
	e = bpf_map_lookup_elem(&weft_nat, &k);
	if (!e || nat_expired(e, now))
		return 1;
	if (nat_touch(e, p, 1, now)) {
		nat_out_key(&out, &k, e);
		nat_touch_partner(&out, e->expires, e->flags);
	}
	*rev_nat_id = e->rev_nat_id;
	send_debug(skb, DBG_SNAT_REVERSE, 0, k.daddr, e->addr,
		   ((__u32)bpf_ntohs(k.dport) << 16) | bpf_ntohs(e->port));
	if (nat_rewrite(skb, l4_off, k.proto, 1, !p->later_fragment, k.daddr, e->addr, k.dport, e->port) < 0)
		return DROP(DROP_WRITE_ERROR);
	return 0;
}

/* An ICMP error about a translated flow (fragmentation needed above all)
 * arriving for the node: it quotes the packet as it left, node:port ->
 * remote, and the flow's source must see the packet it sent: the outer
 * destination and the quoted source become the original's again
 * (lib/icmp.h), and `p` with them. Returns 0 (and the flow's reverse-NAT
 * id in `*rev_nat_id`: a NodePort flow's quote is then the client's packet
 * to the backend, which the client knows as to the service), 1 when not
 * about a translated flow, or a DROP() code. */
static __always_inline int snat_in_related(struct __sk_buff *skb, __u32 l4_off, struct ct_packet *p,
					   __u16 *rev_nat_id)
{
	struct nat_key k = { .saddr = p->key.daddr, .daddr = p->key.saddr, .sport = p->key.dport,
			     .dport = p->key.sport, .proto = p->key.proto, .dir = NAT_IN };
	struct nat_entry *e;

	if (!nat_proto_ok(p))
		return 1;
	e = bpf_map_lookup_elem(&weft_nat, &k);
	if (!e || nat_expired(e, ct_now()))
		return 1;
	if (icmp_quote_rewrite(skb, l4_off, k.proto, 0, k.daddr, e->addr, k.dport, e->port) < 0 ||
	    icmp_outer_rewrite(skb, 1, k.daddr, e->addr) < 0)
		return DROP(DROP_WRITE_ERROR);
	send_debug(skb, DBG_SNAT_REVERSE, 0, k.daddr, e->addr,
		   ((__u32)bpf_ntohs(k.dport) << 16) | bpf_ntohs(e->port));
	/* `p` follows: it is about the original's packet now. */
	p->key.saddr = e->addr;
	p->key.sport = e->port;
	*rev_nat_id = e->rev_nat_id;
	return 0;
}

/* An ICMP error a pod sends about a packet of its masqueraded flow (the
 * far end's, as the pod got it: remote -> pod:port): it leaves as the
 * node, quoting that packet as it came (to node:port), so the far end
 * recognises its flow. Returns 0, 1 when the flow is not translated, or a
 * DROP() code. */
static __always_inline int snat_out_related(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p)
{
	struct nat_key k = { .saddr = p->key.daddr, .daddr = p->key.saddr, .sport = p->key.dport,
			     .dport = p->key.sport, .proto = p->key.proto, .dir = NAT_OUT };
	struct iphdr *ip = ip4_hdr(skb);
	struct nat_entry *e;

	/* Only about the pod's own flow: the quote names the pod. */
	if (!nat_proto_ok(p) || !ip || ip->saddr != k.saddr)
		return 1;
	e = bpf_map_lookup_elem(&weft_nat, &k);
	if (!e || nat_expired(e, ct_now()))
		return 1;
	if (icmp_quote_rewrite(skb, l4_off, k.proto, 1, k.saddr, e->addr, k.sport, e->port) < 0 ||
	    icmp_outer_rewrite(skb, 0, k.saddr, e->addr) < 0)
		return DROP(DROP_WRITE_ERROR);
	send_debug(skb, DBG_SNAT, 0, k.saddr, e->addr, ((__u32)bpf_ntohs(k.sport) << 16) | bpf_ntohs(e->port));
	return 0;
}

/* Whether a packet for the node may answer a translated flow: an ICMP
 * message, or TCP/UDP to a port of the SNAT range (the node's own traffic
 * is not looked up). */
static __always_inline int nat_may_answer(struct __sk_buff *skb, const struct iphdr *ip,
					  const struct weft_config *cfg)
{
	__be16 dport;

	if (!cfg->snat_port_min)
		return 0;
	if (ip->protocol == IPPROTO_ICMP)
		return 1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return 1; /* a later fragment: no port to look at */
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip->ihl * 4 + 2, &dport, sizeof(dport)) < 0)
		return 0;
	return bpf_ntohs(dport) >= cfg->snat_port_min && bpf_ntohs(dport) <= cfg->snat_port_max;
}

/* A packet for the node's own address that answers a translated flow goes
 * back to where the flow came from: a masqueraded pod's reply on to the
 * delivery stage (lxc.c ipv4_to_endpoint); the reply of a NodePort flow
 * that a backend on another node served leaves out of the underlay device
 * to the client, from the service. Returns 1 when the packet is the node's
 * own, else a verdict or a DROP() code. */
static __always_inline int nat_reply(struct __sk_buff *skb, struct drop_ctx *d)
{
	struct weft_config *cfg = config_get();
	struct trace_ctx t = {};
	struct endpoint_info *dst;
	struct ipcache_info *src;
	struct ct_packet p;
	struct iphdr *ip = ip4_hdr(skb);
	__u16 rev_nat_id = 0;
	__be32 sender;
	__u32 l4_off;
	int ret;

	if (!ip || !cfg || ip->daddr != cfg->node_ip4 || !nat_may_answer(skb, ip, cfg))
		return 1;
	l4_off = sizeof(struct ethhdr) + ip->ihl * 4;
	sender = ip->saddr;
	ret = ct_extract(skb, ip, CT_INGRESS, &p);
	if (ret < 0)
		/* A later fragment whose first was not for a translated
		 * flow (so not recorded) is the node's own. */
		return drop_reason(ret) == DROP_FRAG_NOT_FOUND ? 1 : ret;
	if (p.related)
		ret = snat_in_related(skb, l4_off, &p, &rev_nat_id);
	else
		ret = snat_in(skb, l4_off, &p, &rev_nat_id);
	if (ret)
		return ret;
	src = ipcache_lookup(sender);
	d->src_id = src ? src->sec_identity : IDENTITY_WORLD;
	t.src_id = d->src_id;
	if (rev_nat_id) {
		/* A NodePort flow: the reply, or an error about the client's
		 * packet (its quote now client -> backend), answers as the
		 * service. */
		p.rev_nat_id = rev_nat_id;
		if (p.related)
			ret = lb_related_untranslate(skb, l4_off, &p);
		else
			ret = lb_reverse(skb, l4_off, &p);
		if (ret < 0)
			return ret;
		t.ifindex = cfg->underlay_ifindex;
		send_trace(skb, TRACE_TO_NETWORK, &t);
		return bpf_redirect_neigh(cfg->underlay_ifindex, NULL, 0, 0);
	}
	ip = ip4_hdr(skb);
	if (!ip)
		return DROP(DROP_INVALID);
	dst = lookup_endpoint(ip->daddr);
	if (!dst || (dst->flags & ENDPOINT_F_HOST))
		return DROP(DROP_UNROUTABLE);
	return to_delivery_stage(skb, d, dst);
}

/* A packet for one of the node's own addresses goes up to the host, unless
 * it answers a flow this node translated (nat_reply) or is a backend's
 * reply to a service flow of the host's (lb_host_reply, which translates
 * it on the way). */
static __always_inline int up_to_host(struct __sk_buff *skb, struct drop_ctx *d)
{
	struct trace_ctx t = { .src_id = d->src_id, .dst_id = IDENTITY_HOST };
	int ret = nat_reply(skb, d);

	if (ret != 1)
		return ret;
	ret = lb_host_reply(skb);
	if (ret < 0)
		return ret;
	send_trace(skb, TRACE_TO_HOST, &t);
	return CTX_ACT_OK;
}

#endif /* WEFT_NAT_H */
