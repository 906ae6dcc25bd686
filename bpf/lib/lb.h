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

#ifndef WEFT_LB_MAX
#define WEFT_LB_MAX 65536
#endif

/* lb_frontend.flags */
#define LB_F_NODEPORT  0x1  /* a node address : nodePort frontend */
#define LB_F_AFFINITY  0x2  /* sessionAffinity ClientIP */
#define LB_F_LOCAL     0x4  /* externalTrafficPolicy Local: keep the client address */
#define LB_F_SNAT      0x8  /* remote backends need SNAT to the node (eTP Cluster) */

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

/* A backend of the frontend, chosen at random among its slots (NULL when
 * it has none, or the maps are mid-update). */
static __always_inline struct lb_backend *lb_pick(__be32 addr, __be16 port, __u8 proto,
						  const struct lb_frontend *fe, __u32 *id)
{
	struct lb_key k = { .address = addr, .port = port, .proto = proto };
	struct lb_frontend *slot;

	if (!fe->count)
		return NULL;
	k.slot = (bpf_get_prandom_u32() % fe->count) + 1;
	slot = bpf_map_lookup_elem(&weft_lb_services, &k);
	if (!slot)
		return NULL;
	*id = slot->backend_id;
	return bpf_map_lookup_elem(&weft_lb_backends, id);
}

#endif /* WEFT_LB_H */
