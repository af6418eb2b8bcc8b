#!/bin/bash
# bench-metadata.sh BUILD_DIR: the metadata service (tests/bench/md_server: agent/metadata on
# one loop, one instance) beside nginx (one worker) serving the same bytes from a file on the
# same path, both in netns cab-bsrv on its bridge (169.254.169.254, ports 80 and 21080), the
# load from wrk in netns cab-bcli through a veth, as a guest's requests arrive. Prints
# requests/s and p99 for each path, both servers, and the ratio (targets: >= 0.5x nginx's
# rate, p99 < 2 ms). Env: DURATION (s, 5), CONNS (wrk -c, 16), THREADS (wrk -t, 1),
# SERVER_CPU / CLIENT_CPU (taskset: both servers on one CPU, wrk on another; unset: no
# pinning, better on a machine others load too).
# Everything lives in the two namespaces (removed at exit); needs root, wrk and nginx.
set -uo pipefail
B=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
DURATION=${DURATION:-5} CONNS=${CONNS:-16} THREADS=${THREADS:-1}
SERVER_CPU=${SERVER_CPU:-} CLIENT_CPU=${CLIENT_CPU:-}
PIN_S=() PIN_C=()
[ -n "$SERVER_CPU" ] && command -v taskset >/dev/null && PIN_S=(taskset -c "$SERVER_CPU")
[ -n "$CLIENT_CPU" ] && command -v taskset >/dev/null && PIN_C=(taskset -c "$CLIENT_CPU")
SRV=cab-bsrv CLI=cab-bcli
SERVER=$B/tests/md_server
skip() { echo "SKIP: $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces)"
command -v wrk >/dev/null || skip "wrk is not installed"
NGINX=$(command -v nginx || echo /usr/sbin/nginx); [ -x "$NGINX" ] || skip "nginx is not installed"
[ -x "$SERVER" ] || skip "$SERVER is not built (make tests)"
T=$(mktemp -d /tmp/h-b-bench.XXXXXX)
MD_PID="" NG_PID=""
cleanup() {
    [ -n "$MD_PID" ] && kill "$MD_PID" 2>/dev/null && wait "$MD_PID" 2>/dev/null
    [ -n "$NG_PID" ] && kill "$NG_PID" 2>/dev/null && wait "$NG_PID" 2>/dev/null
    ip netns del $CLI 2>/dev/null; ip netns del $SRV 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
S="ip netns exec $SRV" C="ip netns exec $CLI"
ip netns del $CLI 2>/dev/null; ip netns del $SRV 2>/dev/null
ip netns add $SRV && ip netns add $CLI || exit 1
$S ip link set lo up; $C ip link set lo up
$S ip link add cabbr1 type bridge
$S ip addr add 10.78.0.1/24 dev cabbr1
$S ip addr add 169.254.169.254/32 dev cabbr1
$S ip link set cabbr1 up
$S ip link add cabv1 type veth peer name cabv1p netns $CLI
$S ip link set cabv1 master cabbr1 up
$C ip link set cabv1p address 52:54:00:78:00:10
$C ip addr add 10.78.0.10/24 dev cabv1p
$C ip link set cabv1p up
$C ip route add default via 10.78.0.1

cat > "$T/fixture.json" <<'J'
{"instances": [{"uuid": "6a6a6a6a-0000-4000-8000-0000000000be", "ec2_id": "i-000000000000000be",
  "name": "bench", "hostname": "bench", "availability_zone": "nova", "instance_type": "m1.small",
  "keys": {"k": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBENCH bench@host"}, "meta": {"role": "bench"},
  "user_data": "#cloud-config\n", "interfaces": [{"mac": "52:54:00:78:00:10", "ip": "10.78.0.10",
  "prefix": 24, "gateway": "10.78.0.1", "dns": ["10.78.0.1"], "network": "n1"}]}]}
J
$S "${PIN_S[@]}" "$SERVER" --fixture "$T/fixture.json" --listen 169.254.169.254 --port 80 --network n1 --bind-dev cabbr1 \
    --rate 1e9 --burst 1000000000 --ready "$T/ready" 2>"$T/md.log" &
MD_PID=$!
for _ in $(seq 100); do [ -s "$T/ready" ] && break; sleep 0.05; done
[ -s "$T/ready" ] || { echo "md_server did not start: $(cat "$T/md.log")"; exit 1; }

PATHS="/latest/meta-data/instance-id /openstack/latest/network_data.json"
mkdir -p "$T/www" "$T/tmp"
for p in $PATHS; do
    mkdir -p "$T/www$(dirname "$p")"
    $C curl -sf -o "$T/www$p" "http://169.254.169.254$p" || { echo "cannot fetch $p"; exit 1; }
done
cat > "$T/nginx.conf" <<EOF
user root;
daemon off;
master_process on;
worker_processes 1;
pid $T/nginx.pid;
error_log $T/nginx-error.log warn;
events { worker_connections 1024; }
http {
    default_type text/plain;
    access_log off;
    client_body_temp_path $T/tmp/body;
    proxy_temp_path $T/tmp/proxy;
    fastcgi_temp_path $T/tmp/fastcgi;
    uwsgi_temp_path $T/tmp/uwsgi;
    scgi_temp_path $T/tmp/scgi;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    server { listen 169.254.169.254:21080; root $T/www; }
}
EOF
$S "${PIN_S[@]}" "$NGINX" -c "$T/nginx.conf" -e "$T/nginx-error.log" &
NG_PID=$!
for _ in $(seq 100); do $C curl -sf -o /dev/null http://169.254.169.254:21080/latest/meta-data/instance-id && break; sleep 0.05; done
for p in $PATHS; do
    cmp -s <($C curl -sf "http://169.254.169.254$p") <($C curl -sf "http://169.254.169.254:21080$p") ||
        { echo "the two servers answer $p differently"; exit 1; }
done

# wrk's "Requests/sec:" and its --latency 99% line (us)
run_wrk() {
    $C "${PIN_C[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$1" > "$T/wrk.out" 2>&1
    awk '/Requests\/sec:/ { rps = $2 }
         $1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                       p99 = u == "us" ? v : u == "ms" ? v * 1000 : u == "s" ? v * 1e6 : v }
         END { printf "%.0f %.0f\n", rps, p99 }' "$T/wrk.out"
}
echo "metadata service vs nginx (1 worker): wrk -t$THREADS -c$CONNS -d${DURATION}s from a guest netns" \
     "(servers on CPU ${SERVER_CPU:-any}, wrk on CPU ${CLIENT_CPU:-any})"
printf "%-40s %12s %10s %12s %10s %7s\n" path "md req/s" "md p99 us" "nginx req/s" "ng p99 us" ratio
rc=0
for p in $PATHS; do
    read -r md_rps md_p99 < <(run_wrk "http://169.254.169.254$p")
    read -r ng_rps ng_p99 < <(run_wrk "http://169.254.169.254:21080$p")
    ratio=$(awk -v a="$md_rps" -v b="$ng_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf "%-40s %12s %10s %12s %10s %7s\n" "$p" "$md_rps" "$md_p99" "$ng_rps" "$ng_p99" "${ratio}x"
    awk -v r="$ratio" -v p="$md_p99" 'BEGIN { exit !(r >= 0.5 && p < 2000) }' || rc=1
done
[ $rc -eq 0 ] && echo "targets met (>= 0.5x nginx, p99 < 2 ms)" || echo "TARGETS MISSED (>= 0.5x nginx, p99 < 2 ms)"
exit $rc
