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
#include "lib/lb.h"

#define SYS_REJECT 0
#define SYS_PROCEED 1

/* Translates the socket's destination if it is a service. */
static __always_inline int sock_translate(struct bpf_sock_addr *ctx, int remember)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	__u8 proto = ctx->protocol;
	struct lb_frontend *fe;
	struct lb_backend *be;
	__u32 id = 0;

	fe = lb_lookup(addr, port, proto);
	if (!fe)
		return SYS_PROCEED;
	be = lb_pick(addr, port, proto, fe, &id);
	if (!be)
		return SYS_REJECT;
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
	return sock_translate(ctx, 1);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx, 1);
}

/* Backend address back to the service's for the application. */
static __always_inline int sock_reverse(struct bpf_sock_addr *ctx)
{
	struct sock_revnat_key k = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};
	struct lb_revnat *v = bpf_map_lookup_elem(&weft_lb_sock_revnat, &k);

	if (v) {
		ctx->user_ip4 = v->address;
		ctx->user_port = v->port;
	}
	return SYS_PROCEED;
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx);
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx);
}

char _license[] SEC("license") = "Dual BSD/GPL";
