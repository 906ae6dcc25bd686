#!/usr/bin/env bash
# `make demo`: a one-node lab with two pods, then a 3-node VXLAN cluster on
# etcd (with masquerade, NodePorts served by another node and by the host,
# and reached from a pod through any node) and a 2-node
# IP-in-IP one; shows the main flows with the `weft monitor` lines (and
# tcpdump) each one produces, then tears everything down.
set -euo pipefail
cd "$(dirname "$0")/.."

WEFT=${WEFT:-target/debug/weft}
LAB=demo
MON_OUT=$(mktemp /tmp/weft-demo-monitor.XXXXXX)

cleanup() {
  [ -n "${MON_PID:-}" ] && kill "$MON_PID" 2>/dev/null || true
  rm -f "$MON_OUT"
  "$WEFT" lab down "$LAB" >/dev/null 2>&1 || true
  "$WEFT" lab down demox >/dev/null 2>&1 || true
  "$WEFT" lab down demoi >/dev/null 2>&1 || true
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
in_lab() { "$WEFT" lab exec "$LAB" "$@"; }

# Runs a command while `weft monitor ARGS` records on NODE (default node1
# of $LAB), then prints what it saw.
watch() {
  local args=$1; shift
  : >"$MON_OUT"
  WEFT_SOCKET=/run/weft/lab/$LAB/${NODE:-node1}/agent.sock "$WEFT" monitor $args >"$MON_OUT" 2>&1 &
  MON_PID=$!
  sleep 0.5
  printf '$ %s\n' "$*"
  "$@" || true
  sleep 0.5
  kill "$MON_PID" 2>/dev/null || true
  wait "$MON_PID" 2>/dev/null || true
  MON_PID=
  printf -- '--- weft monitor %s\n' "$args"
  grep -v '^Listening' "$MON_OUT" | head -n "${LINES:-1000}" | sed 's/^/    /' || true
}

"$WEFT" lab down "$LAB" >/dev/null 2>&1 || true
say "Bring up a lab: one node (own netns, real agent), two pods added through the real CNI plugin"
run "$WEFT" lab up --name "$LAB" --nodes 1 --pods-per-node 2

POD1=$(in_lab pod1-1 ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
POD2=$(in_lab pod1-2 ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
EP2=$(in_lab node1 "$WEFT" bpf endpoint list | awk -v ip="$POD2:0" '$1 == ip { sub("id=", "", $2); print $2 }')

say "The node's view"
run in_lab node1 "$WEFT" status
run in_lab node1 "$WEFT" endpoint list
run in_lab node1 "$WEFT" bpf endpoint list
run in_lab node1 "$WEFT" identity list

say "Inside pod1-1: a /32 and exactly two routes, both via the gateway"
run in_lab pod1-1 ip -4 addr show eth0
run in_lab pod1-1 ip route

say "ARP for the gateway is answered in BPF with each pod's own lxc MAC"
watch "-v -t debug -t capture" in_lab pod1-1 ping -c 1 -W 2 10.244.1.1
run in_lab pod1-1 ip neigh
run in_lab pod1-2 ping -c 1 -W 2 10.244.1.1 >/dev/null
run in_lab pod1-2 ip neigh

say "pod1-1 -> pod1-2: ping, delivered by bpf_redirect_peer (monitor --related-to $EP2)"
watch "--related-to $EP2" in_lab pod1-1 ping -c 2 -i 0.3 -W 2 "$POD2"

say "pod1-1 -> pod1-2 over TCP (busybox nc), with debug events"
in_lab pod1-2 busybox nc -l -p 8080 >/dev/null 2>&1 &
NC=$!
sleep 0.3
watch "-v" sh -c "echo hello weft | $WEFT lab exec $LAB pod1-1 busybox nc -w 1 $POD2 8080"
kill $NC 2>/dev/null || true

say "Conntrack: every flow pod1-1 opened, with state, lifetime and counters"
run in_lab node1 "$WEFT" bpf ct list

say "Policy: default deny for app=web (pod1-1); pod1-2 (app=client) is refused, as the monitor shows"
POLICY=$(mktemp /tmp/weft-demo-policy.XXXXXX)
cat >"$POLICY" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-deny, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
YAML
run in_lab node1 "$WEFT" policy apply -f "$POLICY"
watch "-t drop -t policy-verdict" in_lab pod1-2 ping -c 1 -W 1 "$POD1"

say "Allow app=client over ICMP and TCP 8080 (Calico's ordered model: a GlobalNetworkPolicy, order 100)"
cat >"$POLICY" <<'YAML'
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: clients-to-web}
spec:
  order: 100
  selector: app == 'web'
  ingress:
  - {action: Allow, protocol: ICMP, source: {selector: app == 'client'}}
  - {action: Allow, protocol: TCP, source: {selector: app == 'client'}, destination: {ports: [8080]}}
YAML
run in_lab node1 "$WEFT" policy apply -f "$POLICY"
rm -f "$POLICY"
watch "-t policy-verdict" in_lab pod1-2 ping -c 1 -W 2 "$POD1"
run in_lab node1 "$WEFT" policy list
run in_lab node1 "$WEFT" policy selectors
run in_lab node1 "$WEFT" endpoint list
EP1=$(in_lab node1 "$WEFT" bpf endpoint list | awk -v ip="$POD1:0" '$1 == ip { sub("id=", "", $2); print $2 }')
run in_lab node1 "$WEFT" bpf policy get "$EP1"

say "A Service: ClusterIP allocated from the store, pod1-2 as its backend; pod1-1 connects to the ClusterIP"
SVC=$(mktemp /tmp/weft-demo-svc.XXXXXX)
cat >"$SVC" <<YAML
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{port: 8080, protocol: TCP}]
endpoints: [{addresses: [$POD2], nodeName: node1}]
YAML
run in_lab node1 "$WEFT" service apply -f "$SVC"
rm -f "$SVC"
sleep 0.5
run in_lab node1 "$WEFT" service list
run in_lab node1 "$WEFT" bpf lb list
in_lab pod1-2 busybox nc -l -p 8080 >/dev/null 2>&1 &
NC=$!
sleep 0.3
watch "-t trace-sock" sh -c "echo hello service | $WEFT lab exec $LAB pod1-1 busybox nc -w 1 10.96.1.1 80"
kill $NC 2>/dev/null || true

say "node -> pod1-1: from-host delivers as identity 1 (host), allowed under any policy (kubelet probes)"
watch "" in_lab node1 ping -c 1 -W 2 "$POD1"

say "pod1-1 spoofs a source address: dropped with a reason and file:line"
in_lab pod1-1 ip addr add 10.244.1.250/32 dev eth0
watch "-t drop" in_lab pod1-1 ping -c 1 -W 1 -I 10.244.1.250 "$POD2"

say "SIGKILL the agent during a 10/s ping and restart it: the datapath keeps forwarding"
in_lab pod1-1 ping -c 30 -i 0.1 -W 2 "$POD2" | tail -2 &
PING=$!
sleep 1
run "$WEFT" lab restart "$LAB" node1
wait $PING

say "The agent dies in the middle of an ADD (WEFT_CRASH_AT=add:after-veth): the restart undoes it"
CRASH_NS=weft-$LAB-crash
ip netns add "$CRASH_NS"
CONF='{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","agentSocket":"/run/weft/lab/'$LAB'/node1/agent.sock"}'
WEFT_CRASH_AT=add:after-veth run "$WEFT" lab restart "$LAB" node1
printf '$ CNI_COMMAND=ADD CNI_CONTAINERID=crashme ... weft-cni   (the agent kills itself half-way)\n'
in_lab node1 sh -c "echo '$CONF' | CNI_COMMAND=ADD CNI_CONTAINERID=crashme CNI_NETNS=/run/netns/$CRASH_NS CNI_IFNAME=eth0 CNI_PATH=/ $(dirname "$WEFT")/weft-cni" | sed 's/^/    /' || true
run in_lab node1 ip -br link show type veth
run "$WEFT" lab restart "$LAB" node1
grep -E "cut short|no endpoint owns|reconciled" "/run/weft/lab/$LAB/node1/agent.log" | tail -3 | sed 's/^/    /'
run in_lab node1 ip -br link show type veth
run in_lab node1 "$WEFT" status
ip netns del "$CRASH_NS"

run "$WEFT" lab down "$LAB"

say "A 3-node cluster on a real etcd, VXLAN between nodes (VNI = the sender's identity)"
LAB=demox
run "$WEFT" lab up --name "$LAB" --nodes 3 --pods-per-node 2 --mode vxlan
sleep 1.5
run in_lab node1 "$WEFT" node list
run in_lab node1 "$WEFT" bpf ipcache list
# pod1-1 is app=web, pod2-2 app=client: two identities, two VNIs.
REMOTE=$(in_lab pod2-2 ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
in_lab node2 timeout 5 tcpdump -lnni eth0 -c 2 udp port 8472 2>/dev/null >"$MON_OUT.td" &
TD=$!
sleep 1
say "pod1-1 -> pod2-2 across nodes: the sending node's view (monitor -v on node1)"
watch "-v" in_lab pod1-1 ping -c 1 -W 2 "$REMOTE"
wait $TD || true
printf -- '--- tcpdump on node2 eth0 (request and reply carry different VNIs)\n'
sed 's/^/    /' "$MON_OUT.td"; rm -f "$MON_OUT.td"
say "... and the receiving node's view (monitor on node2)"
NODE=node2 watch "" in_lab pod1-1 ping -c 1 -W 2 "$REMOTE"

say "Relabel the running pod2-2 (weft pod label): a new identity on node2 and, through the store's watch, in node1's ipcache"
run in_lab node2 "$WEFT" pod label default/pod2-2 app=api tier=backend
run in_lab node2 "$WEFT" endpoint list
sleep 0.2
run sh -c "$WEFT lab exec $LAB node1 $WEFT bpf ipcache list | grep -F '$REMOTE/32'"
run in_lab pod1-1 ping -c 1 -W 2 "$REMOTE"

say "Masquerade: pod1-1 reaches the lab's internet host 203.0.113.1 (which has no route to pods) as node1, SNAT in BPF"
in_lab net busybox nc -l -p 8080 >/dev/null 2>&1 &
NC=$!
in_lab net timeout 5 tcpdump -lnni br0 -c 1 'tcp[tcpflags] & tcp-syn != 0 and dst port 8080' 2>/dev/null >"$MON_OUT.td" &
TD=$!
sleep 1
watch "-t trace" sh -c "echo hello internet | $WEFT lab exec $LAB pod1-1 busybox nc -w 1 203.0.113.1 8080"
wait $TD || true
printf -- '--- tcpdump on the internet host: the SYN comes from node1 and a port of the SNAT range\n'
sed 's/^/    /' "$MON_OUT.td"; rm -f "$MON_OUT.td"
kill $NC 2>/dev/null || true
run in_lab node1 "$WEFT" bpf nat list

say "A NodePort from outside the cluster whose backend (pod2-1) is on another node: node1 sends it on as itself"
BACKEND=$(in_lab pod2-1 ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
SVC=$(mktemp /tmp/weft-demo-svc.XXXXXX)
cat >"$SVC" <<YAML
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080, protocol: TCP}]
endpoints: [{addresses: [$BACKEND], nodeName: node2}]
YAML
run in_lab node1 "$WEFT" service apply -f "$SVC"
rm -f "$SVC"
sleep 0.5
run sh -c "$WEFT lab exec $LAB node1 $WEFT bpf lb list | grep -F ':30080/TCP'"
in_lab pod2-1 busybox nc -l -p 8080 >/dev/null 2>&1 &
NC=$!
in_lab pod2-1 timeout 5 tcpdump -lnni eth0 -c 1 'tcp[tcpflags] & tcp-syn != 0 and dst port 8080' 2>/dev/null >"$MON_OUT.td" &
TD=$!
sleep 1
LINES=7 watch "-v -t debug" sh -c "echo hello nodeport | $WEFT lab exec $LAB net busybox nc -w 1 198.18.0.11 30080"
wait $TD || true
printf -- '--- (the SYN and its answer; every later packet of the flow the same)\n--- tcpdump in pod2-1: the connection comes from node1\n'
sed 's/^/    /' "$MON_OUT.td"; rm -f "$MON_OUT.td"
kill $NC 2>/dev/null || true

say "From a pod, any node's address on the NodePort (here node3's): translated at connect() to the backend"
in_lab pod2-1 busybox nc -l -p 8080 >/dev/null 2>&1 &
NC=$!
sleep 0.5
LINES=2 watch "-t trace-sock" sh -c "echo hello | $WEFT lab exec $LAB pod1-1 busybox nc -w 1 198.18.0.13 30080"
kill $NC 2>/dev/null || true

say "A NodePort served by node1's host itself (a hostNetwork pod): up to its stack, the reply from the node port (to-network)"
SVC=$(mktemp /tmp/weft-demo-svc.XXXXXX)
cat >"$SVC" <<YAML
apiVersion: v1
kind: Service
metadata: {name: hostweb}
spec:
  type: NodePort
  ports: [{port: 80, targetPort: 8091, nodePort: 30091}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: hostweb-1, labels: {kubernetes.io/service-name: hostweb}}
addressType: IPv4
ports: [{port: 8091, protocol: TCP}]
endpoints: [{addresses: [198.18.0.11], nodeName: node1}]
YAML
run in_lab node1 "$WEFT" service apply -f "$SVC"
rm -f "$SVC"
in_lab node1 sh -c 'echo "hello from the node itself" | busybox nc -l -p 8091' >/dev/null 2>&1 &
NC=$!
sleep 1
LINES=4 watch "-t trace" sh -c "$WEFT lab exec $LAB net busybox nc -w 1 198.18.0.11 30091"
kill $NC 2>/dev/null || true
run "$WEFT" lab down "$LAB"

say "Calico's IP-in-IP on the wire (outer IPv4 protocol 4 between the nodes), done in BPF"
LAB=demoi
run "$WEFT" lab up --name "$LAB" --nodes 2 --pods-per-node 1 --mode ipip
sleep 1.5
REMOTE=$(in_lab pod2-1 ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
in_lab node2 timeout 5 tcpdump -lnni eth0 -c 2 ip proto 4 2>/dev/null >"$MON_OUT.td" &
TD=$!
sleep 1
watch "" in_lab pod1-1 ping -c 1 -W 2 "$REMOTE"
wait $TD || true
printf -- '--- tcpdump on node2 eth0\n'
sed 's/^/    /' "$MON_OUT.td"; rm -f "$MON_OUT.td"

say "Tear down"
run "$WEFT" lab down "$LAB"
trap - EXIT
rm -f "$MON_OUT"
