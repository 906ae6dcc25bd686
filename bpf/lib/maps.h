/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map the datapath shares with the agent, and the layout of its keys and
 * values. This header is the single source of truth: the Rust mirrors in
 * crates/datapath/src/maps.rs are checked against the BTF of the compiled
 * objects by a test (crates/datapath/tests/layout.rs). */
#ifndef WEFT_MAPS_H
#define WEFT_MAPS_H

#include "common.h"

#ifndef WEFT_ENDPOINTS_MAX
#define WEFT_ENDPOINTS_MAX 65536
#endif

/* Key of weft_endpoints: an IPv4 address in network byte order. */
struct endpoint_key {
	__u32 ip4;
};

/* The endpoint is the node itself (one of its addresses), not a pod. */
#define ENDPOINT_F_HOST 0x1

/* Value of weft_endpoints: where and how to deliver to a local address. */
struct endpoint_info {
	__u32 ifindex;       /* host-side device (lxc...), 0 for host entries */
	__u32 sec_identity;  /* security identity of the endpoint */
	__u16 ep_id;         /* endpoint id shown by `weft endpoint list` */
	__u16 flags;         /* ENDPOINT_F_* */
	__u8  mac[6];        /* pod-side MAC (eth0 in the pod) */
	__u8  node_mac[6];   /* host-side MAC (the lxc device) */
};

/* Value of weft_lxc: the endpoint that owns a host-side device. */
struct lxc_info {
	__u32 ip4;           /* the endpoint's address, key into weft_endpoints */
	__u16 ep_id;
	__u16 pad;
};

/* Key of weft_ipcache (LPM trie: the prefix length comes first). */
struct ipcache_key {
	__u32 prefixlen;     /* 0..32 */
	__u32 ip4;           /* network byte order */
};

/* The prefix is a node's own address (outer sources must be one of these). */
#define IPCACHE_F_NODE 0x1

/* Value of weft_ipcache: who owns an address anywhere in the cluster. */
struct ipcache_info {
	__u32 sec_identity;     /* identity of the address */
	__u32 tunnel_endpoint;  /* underlay address of its node (network order), 0: this node */
	__u16 flags;            /* IPCACHE_F_* */
	__u16 pad;
};

/* Cross-node modes (a cluster setting). */
#define MODE_VXLAN  0
#define MODE_IPIP   1
#define MODE_NATIVE 2

/* Runtime switches the agent flips without reloading programs. */
#define CFG_F_TRACE 0x1      /* emit trace events (a monitor is listening) */
#define CFG_F_DEBUG 0x2      /* emit debug and capture events (monitor -v) */
#define CFG_F_MASQUERADE 0x4 /* pods' traffic leaving the cluster leaves as the node (lib/nat.h) */
#define CFG_F_HOST_BACKENDS 0x8 /* a NodePort is served by this node's host: to-network looks up its replies */

struct weft_config {
	__u32 flags;         /* CFG_F_* */
	__u32 node_ip4;      /* the node's underlay address (network order) */
	__u32 gw_ip4;        /* the pod gateway address (network order) */
	__u32 mode;          /* MODE_* */
	__u32 vxlan_ifindex; /* weft_vxlan, the collect_md VXLAN device */
	__u32 underlay_ifindex; /* the node's own device (IP-in-IP, native) */
	__u32 path_mtu;      /* largest IPv4 packet a remote pod can be sent */
	__u32 ct_tcp_limit;  /* TCP flows conntrack admits (0: the map's size) */
	__u32 ct_any_limit;  /* other flows conntrack admits (0: the map's size) */
	__u32 ct_lifetime_tcp;   /* seconds; 0: the default of lib/conntrack.h */
	__u32 ct_lifetime_syn;
	__u32 ct_lifetime_close;
	__u32 ct_lifetime_any;
	__u16 nodeport_min;  /* the node port range; 0, 0: no NodePorts */
	__u16 nodeport_max;
	__u16 snat_port_min; /* source ports SNAT gives out (lib/nat.h); 0, 0: none */
	__u16 snat_port_max;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_ENDPOINTS_MAX);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_ENDPOINTS_MAX);
	__type(key, __u32); /* ifindex of the host-side device */
	__type(value, struct lxc_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_lxc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct weft_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, WEFT_ENDPOINTS_MAX);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_ipcache SEC(".maps");

/* Longest-prefix match of an address in the ipcache. */
static __always_inline struct ipcache_info *ipcache_lookup(__be32 ip4)
{
	struct ipcache_key key = { .prefixlen = 32, .ip4 = ip4 };

	return bpf_map_lookup_elem(&weft_ipcache, &key);
}

static __always_inline struct weft_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&weft_config, &zero);
}

static __always_inline __u32 config_flags(void)
{
	struct weft_config *cfg = config_get();

	return cfg ? cfg->flags : 0;
}

static __always_inline struct endpoint_info *lookup_endpoint(__u32 ip4)
{
	struct endpoint_key key = { .ip4 = ip4 };

	return bpf_map_lookup_elem(&weft_endpoints, &key);
}

#endif /* WEFT_MAPS_H */
