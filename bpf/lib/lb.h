/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Services: a frontend (ClusterIP or node address : port / protocol) and
 * its backends, as the agent computes them from Services and
 * EndpointSlices (crates/service).
 *
 * One hash map holds every frontend in slots, as Cilium's lb4_services:
 * slot 0 is the frontend itself (how many backend slots, its reverse-NAT
 * id, flags), slots 1..count name one backend id each. Choosing a backend
 * is then O(1) whatever the number of services: one lookup for the
 * frontend, one for a slot, one for the backend. Backends live once in
 * weft_lb_backends by id, so a change of one backend touches one entry. */
#ifndef WEFT_LB_H
#define WEFT_LB_H

#include "common.h"
#include "drop.h"
#include "dbg.h"
#include "conntrack.h"
#include "icmp.h"

#ifndef WEFT_LB_MAX
#define WEFT_LB_MAX 65536
#endif

/* lb_frontend.flags */
#define LB_F_NODEPORT  0x1  /* a node address : nodePort frontend */
#define LB_F_AFFINITY  0x2  /* sessionAffinity ClientIP */
#define LB_F_LOCAL     0x4  /* externalTrafficPolicy Local: keep the client address */
#define LB_F_SNAT      0x8  /* remote backends need SNAT to the node (eTP Cluster) */
#define LB_F_MAGLEV    0x10 /* per-packet: the backend comes from the Maglev table */

/* Slots of a Maglev table (a prime: crates/service/src/maglev.rs). */
#define LB_MAGLEV_SIZE 1021

struct lb_key {
	__be32 address;     /* the ClusterIP (or node address) */
	__be16 port;        /* network order */
	__u16  slot;        /* 0: the frontend; 1..count: its backend slots */
	__u8   proto;       /* IPPROTO_TCP / IPPROTO_UDP / IPPROTO_SCTP */
	__u8   pad[3];
};

/* Slot 0: the frontend; slot n > 0: `backend_id` only. */
struct lb_frontend {
	__u32 backend_id;   /* slot > 0 */
	__u16 count;        /* slot 0: backend slots; 0 = no usable backend: reject */
	__u16 rev_nat_id;   /* slot 0: how replies find the frontend again */
	__u32 affinity_timeout; /* slot 0: seconds, with LB_F_AFFINITY */
	__u8  flags;        /* slot 0: LB_F_* */
	__u8  pad[3];
};

struct lb_backend {
	__be32 address;
	__be16 port;        /* network order */
	__u8   proto;
	__u8   flags;
};

/* Reverse NAT: the frontend a translated flow answers as. */
struct lb_revnat {
	__be32 address;
	__be16 port;
	__u16  pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_LB_MAX);
	__type(key, struct lb_key);
	__type(value, struct lb_frontend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_lb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_LB_MAX);
	__type(key, __u32);
	__type(value, struct lb_backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_LB_MAX);
	__type(key, __u16);
	__type(value, struct lb_revnat);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_lb_revnat SEC(".maps");

/* Maglev consistent hashing (an agent option, --lb-algorithm maglev): a
 * frontend's table of LB_MAGLEV_SIZE backend ids, by reverse-NAT id. The
 * agent computes it from the backends' addresses (crates/service), so
 * every node's table names the same backend in the same slot, and a flow
 * hashes to the same slot everywhere: whichever node a flow enters, it
 * reaches the same backend, and a backend change moves little more than
 * the flows that were on it. */
struct lb_maglev {
	__u32 backend_ids[LB_MAGLEV_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_LB_MAX);
	__type(key, __u16);
	__type(value, struct lb_maglev);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_lb_maglev SEC(".maps");

/* Where lb_flow_backend builds a new CT_SERVICE entry: on the stack, its
 * 56 bytes would count in the frame of lb_translate, which the stack of
 * every caller must leave room for (the verifier allows 512 bytes for all
 * frames together). Per CPU, filled and written within one run of a
 * program: no other packet comes in between. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_lb_scratch SEC(".maps");

/* Session affinity (ClientIP): which backend a client address got from a
 * service, and when it last used it. */
struct lb_affinity_key {
	__be32 client;
	__u16  rev_nat_id;
	__u16  pad;
};

struct lb_affinity {
	__u32 backend_id;
	__u32 last_used;    /* monotonic seconds */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_LB_MAX);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_lb_affinity SEC(".maps");

/* UDP translations of socket LB (bpf/sock.c), by socket: what recvmsg
 * and getpeername turn back into the service's address. */
struct sock_revnat_key {
	__u64  cookie;      /* bpf_get_socket_cookie */
	__be32 address;     /* the backend */
	__be16 port;
	__u16  pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_revnat_key);
	__type(value, struct lb_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_lb_sock_revnat SEC(".maps");

/* The frontend of (address, port, proto), or NULL. */
static __always_inline struct lb_frontend *lb_lookup(__be32 addr, __be16 port, __u8 proto)
{
	struct lb_key k = { .address = addr, .port = port, .proto = proto };

	return bpf_map_lookup_elem(&weft_lb_services, &k);
}

/* The backend `id` if it is still one of the frontend's, else NULL: one
 * lookup when `hint` names the slot it had (a flow remembers it), else a
 * bounded walk of the first 64 slots (session affinity: a service with
 * more re-picks, which is only a lost affinity, never a wrong backend). */
static __always_inline struct lb_backend *lb_member(__be32 addr, __be16 port, __u8 proto,
						    const struct lb_frontend *fe, __u32 id, __u16 hint)
{
	struct lb_key k = { .address = addr, .port = port, .proto = proto, .slot = hint };
	struct lb_frontend *slot;
	__u16 i;

	if (hint && hint <= fe->count) {
		slot = bpf_map_lookup_elem(&weft_lb_services, &k);
		if (slot && slot->backend_id == id)
			return bpf_map_lookup_elem(&weft_lb_backends, &id);
	}
	for (i = 1; i <= 64 && i <= fe->count; i++) {
		k.slot = i;
		slot = bpf_map_lookup_elem(&weft_lb_services, &k);
		if (slot && slot->backend_id == id)
			return bpf_map_lookup_elem(&weft_lb_backends, &id);
	}
	return NULL;
}

static __always_inline __u32 lb_now(void)
{
	return bpf_ktime_get_ns() / 1000000000ULL;
}

/* The flow's hash for Maglev: the same function of the same tuple on
 * every node (a murmur3-style mix; no per-boot seed, unlike the kernel's
 * skb hash). */
static __always_inline __u32 lb_flow_hash(const struct ct_key *k)
{
	__u32 h = 0x57454654; /* "WEFT" */
	__u32 words[4] = { k->saddr, k->daddr, ((__u32)k->sport << 16) | k->dport, k->proto };
	int i;

	for (i = 0; i < 4; i++) {
		__u32 w = words[i] * 0xcc9e2d51;

		w = (w << 15) | (w >> 17);
		h ^= w * 0x1b873593;
		h = ((h << 13) | (h >> 19)) * 5 + 0xe6546b64;
	}
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	return h ^ (h >> 16);
}

/* The backend id of the frontend's Maglev table for a flow of hash `hash`
 * (0: no table yet). */
static __always_inline __u32 lb_maglev_pick(const struct lb_frontend *fe, __u32 hash)
{
	__u16 id = fe->rev_nat_id;
	struct lb_maglev *t = bpf_map_lookup_elem(&weft_lb_maglev, &id);
	__u32 slot = hash % LB_MAGLEV_SIZE;

	/* The compiler knows the bound; the verifier must see it checked. */
	asm volatile("" : "+r"(slot));
	if (!t || slot >= LB_MAGLEV_SIZE)
		return 0;
	return t->backend_ids[slot];
}

/* A backend of the frontend (NULL when it has none, or the maps are
 * mid-update): from its Maglev table for a flow of hash `hash` when it
 * has one and the caller knows the flow (socket LB does not: `hash` 0),
 * else at random among its slots. With session affinity, the backend this
 * client had, while it is still used within the timeout and still one of
 * the service's. */
static __always_inline struct lb_backend *lb_pick(__be32 addr, __be16 port, __u8 proto,
						  const struct lb_frontend *fe, __u32 *id,
						  __be32 client, __u32 hash, __u16 *picked_slot)
{
	struct lb_key k = { .address = addr, .port = port, .proto = proto };
	struct lb_affinity_key ak = { .client = client, .rev_nat_id = fe->rev_nat_id };
	struct lb_affinity *aff = NULL, fresh = {};
	struct lb_backend *be;
	struct lb_frontend *slot;
	__u32 now = 0;

	if (!fe->count)
		return NULL;
	if (fe->flags & LB_F_AFFINITY) {
		now = lb_now();
		aff = bpf_map_lookup_elem(&weft_lb_affinity, &ak);
		if (aff && now - aff->last_used <= fe->affinity_timeout) {
			be = lb_member(addr, port, proto, fe, aff->backend_id, 0);
			if (be) {
				*id = aff->backend_id;
				aff->last_used = now;
				return be;
			}
		}
	}
	*id = (fe->flags & LB_F_MAGLEV) && hash ? lb_maglev_pick(fe, hash) : 0;
	/* A Maglev id whose backend is not written yet (the agent mid-update)
	 * falls back to a random slot: never a refusal while backends exist. */
	if (*id && !bpf_map_lookup_elem(&weft_lb_backends, id))
		*id = 0;
	*picked_slot = 0;
	if (!*id) {
		k.slot = (bpf_get_prandom_u32() % fe->count) + 1;
		slot = bpf_map_lookup_elem(&weft_lb_services, &k);
		if (!slot)
			return NULL;
		*id = slot->backend_id;
		*picked_slot = k.slot;
	}
	if (fe->flags & LB_F_AFFINITY) {
		fresh.backend_id = *id;
		fresh.last_used = now;
		bpf_map_update_elem(&weft_lb_affinity, &ak, &fresh, BPF_ANY);
	}
	return bpf_map_lookup_elem(&weft_lb_backends, id);
}

/* Hairpin: a pod's connection through a service to itself. The pod's
 * kernel drops a packet from its own address arriving from outside (a
 * martian), so the connection comes from this link-local address instead
 * (Cilium uses the same one), and the pod's answer, sent to it through
 * its gateway, goes back to the pod from the service. */
#define LB_HAIRPIN_IP4 bpf_htonl(0xa9fe2a01) /* 169.254.42.1 */

/* Per-packet translation, for what socket LB did not translate (a
 * process outside the cgroup, a pod of another runtime): the first packet
 * of a flow to a service picks a backend and remembers it in a CT_SERVICE
 * conntrack entry, so every packet of the flow reaches the same backend;
 * the flow's own entry keeps the reverse-NAT id, and replies get the
 * service's address back at the client's ingress. */

#define IP_CSUM_OFF  (sizeof(struct ethhdr) + __builtin_offsetof(struct iphdr, check))
#define IP_DST_OFF   (sizeof(struct ethhdr) + __builtin_offsetof(struct iphdr, daddr))
#define IP_SRC_OFF   (sizeof(struct ethhdr) + __builtin_offsetof(struct iphdr, saddr))

/* Where the L4 checksum is, for TCP and UDP (0: no checksum to fix). */
static __always_inline __u32 l4_csum_off(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return __builtin_offsetof(struct tcphdr, check);
	if (proto == IPPROTO_UDP)
		return __builtin_offsetof(struct udphdr, check);
	return 0;
}

/* Rewrites one address and the port next to it (destination when `dst`,
 * else source), fixing the IPv4 and L4 checksums. A later fragment has no
 * L4 header (`l4` 0): only its address changes — the datagram's checksum,
 * in the first fragment, was fixed there. Returns 0 or < 0. */
static __always_inline int lb_rewrite(struct __sk_buff *skb, __u32 l4_off, __u8 proto, int dst, int l4,
				      __be32 old_ip, __be32 new_ip, __be16 old_port, __be16 new_port)
{
	__u32 csum = l4 ? l4_csum_off(proto) : 0;
	__u32 ip_off = dst ? IP_DST_OFF : IP_SRC_OFF;
	__u32 port_off = l4_off + (dst ? 2 : 0);
	__u64 flags = BPF_F_PSEUDO_HDR | sizeof(__be32);

	if (proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0;
	if (csum) {
		if (bpf_l4_csum_replace(skb, l4_off + csum, old_ip, new_ip, flags) < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, l4_off + csum, old_port, new_port,
					sizeof(__be16) | (proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0)) < 0)
			return -1;
	}
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ip, new_ip, sizeof(__be32)) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, ip_off, &new_ip, sizeof(new_ip), 0) < 0)
		return -1;
	if (l4 && bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
		return -1;
	return 0;
}

/* The backend a flow to a service was given, remembered in a CT_SERVICE
 * entry (or chosen now and remembered). NULL with `*err` 0: the service
 * has no usable backend; with a DROP() code: the conntrack table is full
 * (the entry is admitted as any flow's). */
static __always_inline struct lb_backend *lb_flow_backend(const struct ct_packet *p,
							  const struct lb_frontend *fe, __be32 fe_addr, int *err)
{
	struct ct_key k = p->key;
	struct ct_entry *e, *fresh;
	struct lb_backend *be;
	__u64 *n_created;
	__u32 id = 0, zero = 0;
	__u16 picked = 0;

	k.scope = CT_SERVICE;
	e = bpf_map_lookup_elem(ct_map(k.proto), &k);
	if (e) {
		be = lb_member(fe_addr, k.dport, k.proto, fe, e->backend_id, e->backend_slot);
		if (be) {
			/* Replies never pass here: the client's first ACK after
			 * its SYN says the flow was answered, so the entry
			 * lives as long as an established flow's. */
			ct_update(e, p, (p->tcp_flags & (TCP_FLAG_ACK | TCP_FLAG_SYN)) == TCP_FLAG_ACK);
			return be;
		}
		/* That backend left the service: the flow moves to another
		 * (a UDP client on a fixed port notices at its next datagram). */
	}
	be = lb_pick(fe_addr, k.dport, k.proto, fe, &id, k.saddr, lb_flow_hash(&k) | 1, &picked);
	if (!be)
		return NULL;
	n_created = e ? NULL : ct_admit(k.proto);
	if (!e && !n_created) {
		*err = DROP(DROP_CT_CREATE_FAILED);
		return NULL;
	}
	fresh = bpf_map_lookup_elem(&weft_lb_scratch, &zero);
	if (!fresh)
		return be; /* unreachable (an array's only slot); unremembered */
	__builtin_memset(fresh, 0, sizeof(*fresh));
	fresh->created = ct_now();
	fresh->backend_id = id;
	fresh->backend_slot = picked;
	fresh->rev_nat_id = fe->rev_nat_id;
	fresh->tx_packets = 1;
	fresh->tx_bytes = p->len;
	fresh->expires = fresh->created + ct_lifetime(fresh, k.proto);
	if (!bpf_map_update_elem(ct_map(k.proto), &k, fresh, BPF_ANY) && n_created)
		__sync_fetch_and_add(n_created, 1);
	return be;
}

/* Another node's address on a NodePort: the NodePort frontend of this
 * node (the agent programs NodePorts under this node's address only), its
 * address in `*fe_addr`; NULL when `addr` is no other node's or the port
 * no NodePort. Ports outside the node port range cost no lookup. Socket
 * LB (bpf/sock.c) and the per-packet path both use it: a pod's connection
 * to another node's NodePort goes straight to a backend; sent on as it
 * is, it would reach that node's host stack through the tunnel. */
static __always_inline struct lb_frontend *lb_remote_nodeport(__be32 addr, __be16 port, __u8 proto,
							      __be32 *fe_addr)
{
	struct weft_config *cfg = config_get();
	struct ipcache_info *node;
	struct lb_frontend *fe;

	if (!cfg || !cfg->node_ip4 || addr == cfg->node_ip4 || bpf_ntohs(port) < cfg->nodeport_min ||
	    bpf_ntohs(port) > cfg->nodeport_max)
		return NULL;
	node = ipcache_lookup(addr);
	if (!node || !(node->flags & IPCACHE_F_NODE))
		return NULL;
	fe = lb_lookup(cfg->node_ip4, port, proto);
	if (!fe || !(fe->flags & LB_F_NODEPORT))
		return NULL;
	*fe_addr = cfg->node_ip4;
	return fe;
}

/* A packet to a service: DNAT to the flow's backend, and `p` follows
 * (its tuple is the backend's, its rev_nat_id the service's). Returns the
 * service address (for traces' orig-ip), 0 when not a service, or a
 * DROP() code.
 *
 * A global function, not inlined: the verifier checks it once, on its own,
 * and its callers see only its result. Inlined, its many paths (affinity,
 * Maglev, a flow whose backend left, a full table) multiplied those of
 * from-lxc past the verifier's million instructions. */
__attribute__((noinline)) __s64 lb_translate(struct __sk_buff *skb, __u32 l4_off, struct ct_packet *p)
{
	struct lb_frontend *fe;
	struct lb_backend *be;
	__be32 vip, fe_addr;
	__be16 vport;
	int err = 0;

	if (!p || p->related || (p->key.proto != IPPROTO_TCP && p->key.proto != IPPROTO_UDP))
		return 0;
	vip = p->key.daddr;
	vport = p->key.dport;
	fe_addr = vip;
	fe = lb_lookup(vip, vport, p->key.proto);
	if (!fe)
		fe = lb_remote_nodeport(vip, vport, p->key.proto, &fe_addr);
	if (!fe)
		return 0;
	send_debug(skb, DBG_LB_LOOKUP, 0, vip, ((__u32)bpf_ntohs(vport) << 16) | p->key.proto, fe->count);
	be = lb_flow_backend(p, fe, fe_addr, &err);
	if (!be)
		return err ? err : DROP(DROP_NO_SERVICE_BACKEND);
	send_debug(skb, DBG_LB_BACKEND, 0, be->address, bpf_ntohs(be->port), 0);
	if (lb_rewrite(skb, l4_off, p->key.proto, 1, !p->later_fragment, vip, be->address, vport, be->port) < 0)
		return DROP(DROP_WRITE_ERROR);
	p->key.daddr = be->address;
	p->key.dport = be->port;
	p->rev_nat_id = fe->rev_nat_id;
	/* Replies come from the address the client asked, when it is not
	 * the frontend's own (another node's, on a NodePort). */
	p->asked_addr = vip != fe_addr ? vip : 0;
	return vip;
}

/* Puts the frontend of the flow's reverse-NAT id back in the packet: as
 * its source (`dst` 0: a reply, backend -> client) or as its destination
 * (`dst` 1: the client's own packet). Returns 0 or a DROP() code. */
static __always_inline int lb_restore(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p, int dst)
{
	struct lb_revnat *rn;
	__u16 id = p->rev_nat_id;

	if (!id)
		return 0;
	rn = bpf_map_lookup_elem(&weft_lb_revnat, &id);
	if (!rn)
		return 0;
	if (!dst)
		send_debug(skb, DBG_LB_REVNAT, 0, rn->address, bpf_ntohs(rn->port), id);
	if (lb_rewrite(skb, l4_off, p->key.proto, dst, !p->later_fragment, dst ? p->key.daddr : p->key.saddr,
		       p->asked_addr ? p->asked_addr : rn->address, dst ? p->key.dport : p->key.sport,
		       rn->port) < 0)
		return DROP(DROP_WRITE_ERROR);
	return 0;
}

/* A reply of a translated flow: the backend's address becomes the
 * service's again. */
static __always_inline int lb_reverse(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p)
{
	return lb_restore(skb, l4_off, p, 0);
}

/* Undoes lb_translate on the client's own packet (its destination is the
 * service's again), for an ICMP error that quotes it: the client's socket
 * knows the service, not the backend. */
static __always_inline int lb_untranslate(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p)
{
	return lb_restore(skb, l4_off, p, 1);
}

/* An ICMP error about a translated flow's packet in its first direction
 * (client -> backend): the client's socket knows the service, so the
 * quoted destination becomes the service again. When the backend itself
 * sent the error (port unreachable), its outer source becomes the service
 * too: a client outside the cluster cannot route to a pod's address (and
 * would not expect it). `p` is the error as conntrack saw it; its
 * rev_nat_id is the flow's. Returns 0 or a DROP() code. */
static __always_inline int lb_related_untranslate(struct __sk_buff *skb, __u32 l4_off, const struct ct_packet *p)
{
	struct iphdr *ip = ip4_hdr(skb);
	struct lb_revnat *rn;
	__u16 id = p->rev_nat_id;

	if (!id || (p->key.proto != IPPROTO_TCP && p->key.proto != IPPROTO_UDP))
		return 0;
	rn = bpf_map_lookup_elem(&weft_lb_revnat, &id);
	if (!rn || (rn->address == p->key.daddr && rn->port == p->key.dport))
		return 0;
	if (!ip)
		return DROP(DROP_INVALID);
	if (ip->saddr == p->key.daddr && icmp_outer_rewrite(skb, 0, p->key.daddr, rn->address) < 0)
		return DROP(DROP_WRITE_ERROR);
	if (icmp_quote_rewrite(skb, l4_off, p->key.proto, 1, p->key.daddr, rn->address, p->key.dport, rn->port) < 0)
		return DROP(DROP_WRITE_ERROR);
	send_debug(skb, DBG_LB_REVNAT, 0, rn->address, bpf_ntohs(rn->port), id);
	return 0;
}

/* A reply to a service flow the host opened per packet (bpf/host.c
 * tracks those at its egress): from the service again, for the host's
 * socket. Called wherever a packet is about to go up to the host. Returns
 * 0 (translated, or not such a reply) or a DROP() code. */
static __always_inline int lb_host_reply(struct __sk_buff *skb)
{
	struct iphdr *ip = ip4_hdr(skb);
	struct ct_packet p;
	int ret;

	if (!ip || (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
		return 0;
	ret = ct_extract(skb, ip, CT_INGRESS, &p);
	if (ret < 0)
		/* A later fragment whose first went to the host untracked is
		 * the host's, not a drop. */
		return drop_reason(ret) == DROP_FRAG_NOT_FOUND ? 0 : ret;
	if (ct_lookup(skb, 0, &p) != CT_REPLY || !p.rev_nat_id)
		return 0;
	return lb_reverse(skb, sizeof(struct ethhdr) + ip->ihl * 4, &p);
}

#endif /* WEFT_LB_H */
