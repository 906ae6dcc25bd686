/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Socket load balancing: cgroup programs that translate a service address
 * to a backend when a socket is connected or a datagram sent, so packets
 * leave the pod already addressed to the backend (seed 000: the trace's
 * orig-ip is the service) and no per-packet NAT is needed for them.
 *
 *   connect4     TCP and connected UDP: the destination becomes a backend;
 *   sendmsg4     unconnected UDP, per datagram, remembering the service;
 *   recvmsg4     UDP replies: the backend's address becomes the service's
 *                again, so the application sees who it asked;
 *   getpeername4 the same for getpeername().
 * A service without a usable backend refuses connect() at once (EPERM)
 * instead of letting the client time out. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/lb.h"

/* What a trace-sock event saw (its subtype). */
#define SOCK_EV_CONNECT     0  /* connect4: service -> backend */
#define SOCK_EV_SENDMSG     1  /* sendmsg4: service -> backend */
#define SOCK_EV_RECVMSG     2  /* recvmsg4: backend -> service */
#define SOCK_EV_GETPEERNAME 3  /* getpeername4: backend -> service */
#define SOCK_EV_REJECT      4  /* connect/sendmsg to a service without backends */

/* `weft monitor -t trace-sock`, while a monitor listens. */
static __always_inline void send_trace_sock(struct bpf_sock_addr *ctx, __u8 kind, __be32 svc,
					    __be16 svc_port, __be32 be, __be16 be_port)
{
	struct weft_event *e;

	if (!(config_flags() & CFG_F_TRACE))
		return;
	e = event_start_nopkt(EVENT_TRACE_SOCK, kind);
	if (!e)
		return;
	e->hash = (__u32)bpf_get_socket_cookie(ctx);
	e->orig_ip = svc;
	e->arg1 = be;
	e->arg2 = (__u32)bpf_ntohs(svc_port) << 16 | bpf_ntohs(be_port);
	e->arg3 = ctx->protocol;
	event_submit(e);
}

#define SYS_REJECT 0
#define SYS_PROCEED 1

/* The client for session affinity: at connect() the source address is
 * not chosen yet, so the client is the socket's network namespace (a pod),
 * as Cilium's socket LB does; folded to the key's 32 bits. */
static __always_inline __be32 sock_client(struct bpf_sock_addr *ctx)
{
	__u64 c = bpf_get_netns_cookie(ctx);

	return (__u32)c ^ (__u32)(c >> 32);
}

/* Translates the socket's destination if it is a service. */
static __always_inline int sock_translate(struct bpf_sock_addr *ctx, int remember, __u8 kind)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	__u8 proto = ctx->protocol;
	struct lb_frontend *fe;
	struct lb_backend *be;
	__be32 lookup = addr;
	__u32 id = 0;
	__u16 slot;

	fe = lb_lookup(addr, port, proto);
	if (!fe)
		fe = lb_remote_nodeport(addr, port, proto, &lookup);
	if (!fe)
		return SYS_PROCEED;
	be = lb_pick(lookup, port, proto, fe, &id, sock_client(ctx), 0, &slot);
	if (!be) {
		send_trace_sock(ctx, SOCK_EV_REJECT, addr, port, 0, 0);
		return SYS_REJECT;
	}
	send_trace_sock(ctx, kind, addr, port, be->address, be->port);
	if (remember) {
		struct sock_revnat_key k = {
			.cookie = bpf_get_socket_cookie(ctx),
			.address = be->address,
			.port = be->port,
		};
		struct lb_revnat v = { .address = addr, .port = port };

		bpf_map_update_elem(&weft_lb_sock_revnat, &k, &v, BPF_ANY);
	}
	ctx->user_ip4 = be->address;
	ctx->user_port = be->port;
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	/* Remembered for getpeername (and recvmsg of connected UDP). */
	return sock_translate(ctx, 1, SOCK_EV_CONNECT);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx, 1, SOCK_EV_SENDMSG);
}

/* Backend address back to the service's for the application. */
static __always_inline int sock_reverse(struct bpf_sock_addr *ctx, __u8 kind)
{
	struct sock_revnat_key k = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};
	struct lb_revnat *v = bpf_map_lookup_elem(&weft_lb_sock_revnat, &k);

	if (v) {
		send_trace_sock(ctx, kind, v->address, v->port, ctx->user_ip4, (__be16)ctx->user_port);
		ctx->user_ip4 = v->address;
		ctx->user_port = v->port;
	}
	return SYS_PROCEED;
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx, SOCK_EV_RECVMSG);
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx, SOCK_EV_GETPEERNAME);
}

char _license[] SEC("license") = "Dual BSD/GPL";
