/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Never loaded. Compiled only so that its BTF describes every struct the
 * datapath shares with user space (some, like struct weft_event, are only
 * used through pointers and would otherwise be missing from the programs'
 * BTF). crates/datapath/tests/layout.rs compares the Rust mirrors with it. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/pipeline.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/lb.h"
#include "lib/nat.h"

struct endpoint_key layout_endpoint_key;
struct endpoint_info layout_endpoint_info;
struct lxc_info layout_lxc_info;
struct weft_config layout_weft_config;
struct weft_event layout_weft_event;
struct ipcache_key layout_ipcache_key;
struct ipcache_info layout_ipcache_info;
struct ct_key layout_ct_key;
struct ct_entry layout_ct_entry;
struct pipeline_state layout_pipeline_state;
struct policy_key layout_policy_key;
struct policy_entry layout_policy_entry;
struct policy_endpoint layout_policy_endpoint;
struct identity_info layout_identity_info;
struct policy_cidr_key layout_policy_cidr_key;
struct lb_key layout_lb_key;
struct lb_frontend layout_lb_frontend;
struct lb_backend layout_lb_backend;
struct lb_revnat layout_lb_revnat;
struct sock_revnat_key layout_sock_revnat_key;
struct lb_affinity_key layout_lb_affinity_key;
struct lb_affinity layout_lb_affinity;
struct lb_maglev layout_lb_maglev;
struct nat_key layout_nat_key;
struct nat_entry layout_nat_entry;
int layout_abi_version = WEFT_ABI_VERSION;
