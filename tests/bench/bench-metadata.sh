#!/bin/bash
# bench-metadata.sh BUILD_DIR: issue 10's metadata benchmark. wrk in a guest's netns against
#  - agent:  the REAL compute-agent (tests/bench/md_agent.py: the libvirt test driver in a netns
#            of its own, network n1 on a bridge it makes, one instance whose port's veth peer is
#            the guest; its own loop with the API, the store and agent/netmap.c's lookup), on :80;
#  - md:     tests/bench/md_server (the agent/metadata library on a loop of its own, a fixture
#            of the same instance, a fake lookup), on :24581 in the same netns, same bridge;
#  - nginx:  one worker serving the agent's bytes (md's without the agent) from files, :24580;
# all bound to 169.254.169.254 on the bridge, reached through the guest's veth. Prints requests/s,
# p99 and the server's CPU time per request (from /proc: robust to others' load, unlike the
# first two), each the median of REPEAT runs (interleaved) and their spread, for each path, the
# ratios to nginx, and PASS/MISS against the targets (>= 0.5x nginx's rate, p99 < 2 ms).
# Paths: /latest/meta-data/instance-id, /openstack/latest/meta_data.json, the first again
# with an IMDSv2 token (wrk -H), and the first with a new connection per request (Connection:
# close: the agent's per-connection lookup each time).
# Env: DURATION (s, 3), REPEAT (3), CONNS (wrk -c, 16), THREADS (wrk -t, 1), AGENT (1; 0: no
# agent, md_server in namespaces of its own, as before), SERVER_CPU / CLIENT_CPU (taskset:
# servers, the agent's threads included, on one CPU, wrk on another; unset: no pinning, better
# on a machine others load too), PERF_DIR (perf record -g of the agent during its first run
# of each path, into that directory; PERF_OPTS: its call-graph options, -g unless set),
# NGINX_OPTS (directives added to nginx's http block, e.g. "open_file_cache max=64; tcp_nopush on;").
# The agent's metadata.rate and burst are raised to their maximum (1000000) for the bench.
# Everything lives in namespaces made here (removed at exit, also on failure); needs root, wrk
# and nginx (and for the agent: the agent built, nft).
set -uo pipefail
B=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
DURATION=${DURATION:-3} REPEAT=${REPEAT:-3} CONNS=${CONNS:-16} THREADS=${THREADS:-1} AGENT=${AGENT:-1}
SERVER_CPU=${SERVER_CPU:-} CLIENT_CPU=${CLIENT_CPU:-} PERF_DIR=${PERF_DIR:-} NGINX_OPTS=${NGINX_OPTS:-}
PIN_S=() PIN_C=()
[ -n "$SERVER_CPU" ] && command -v taskset >/dev/null && PIN_S=(taskset -c "$SERVER_CPU")
[ -n "$CLIENT_CPU" ] && command -v taskset >/dev/null && PIN_C=(taskset -c "$CLIENT_CPU")
PY=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )}
SERVER=$B/tests/md_server
MD=169.254.169.254 AG_PORT=80 NG_PORT=24580 MD_PORT=24581
skip() { echo "SKIP: $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces)"
command -v wrk >/dev/null || skip "wrk is not installed"
NGINX=$(command -v nginx || echo /usr/sbin/nginx); [ -x "$NGINX" ] || skip "nginx is not installed"
[ -x "$SERVER" ] || skip "$SERVER is not built (make tests)"
T=$(mktemp -d /tmp/cab-bench.XXXXXX)
MD_PID="" NG_PID="" HELPER_PID="" OWN_NS="" AGENT_NS="" CLIENT_NS=""
cleanup() {
    [ -n "$MD_PID" ] && kill "$MD_PID" 2>/dev/null && wait "$MD_PID" 2>/dev/null
    [ -n "$NG_PID" ] && kill "$NG_PID" 2>/dev/null && wait "$NG_PID" 2>/dev/null
    if [ -n "$HELPER_PID" ]; then
        exec 3>&-   # EOF: the helper stops the agent and deletes its namespaces
        wait "$HELPER_PID" 2>/dev/null
        # should it have died without doing so
        for n in $AGENT_NS $CLIENT_NS; do ip netns del "$n" 2>/dev/null; done
    fi
    for n in $OWN_NS; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
LOAD_BEFORE=$(cat /proc/loadavg)

# ------------------------------------------------------------------ the namespaces (and the agent)
HAVE_AGENT=0 AGENT_NOTE=""
if [ "$AGENT" != 0 ]; then
    mkfifo "$T/hold"
    "$PY" "$HERE/md_agent.py" "$B" "$T/agent.env" < "$T/hold" 2> "$T/agent.log" &
    HELPER_PID=$!
    exec 3> "$T/hold"
    for _ in $(seq 1200); do   # its deadline: 60 s
        [ -s "$T/agent.env" ] && break
        kill -0 "$HELPER_PID" 2>/dev/null || break
        sleep 0.05
    done
    if [ -s "$T/agent.env" ]; then
        . "$T/agent.env"
        HAVE_AGENT=1
        [ -n "$SERVER_CPU" ] && command -v taskset >/dev/null && taskset -a -p -c "$SERVER_CPU" "$AGENT_PID" >/dev/null
    else
        wait "$HELPER_PID"; hrc=$?; HELPER_PID=""
        [ $hrc -eq 77 ] || { echo "the agent did not start (helper exit $hrc):"; cat "$T/agent.log"; exit 1; }
        AGENT_NOTE="agent: $(cat "$T/agent.log") (md_server and nginx only)"
    fi
fi
if [ $HAVE_AGENT -eq 1 ]; then
    SRV=$AGENT_NS CLI=$CLIENT_NS BR=$BRIDGE
    cp "$T/agent.env.fixture.json" "$T/fixture.json"
else
    SRV=cab-bsrv-$$ CLI=cab-bcli-$$ BR=cabbr1 GUEST_IP=10.78.0.10
    OWN_NS="$CLI $SRV"
    ip netns add $SRV && ip netns add $CLI || exit 1
    S="ip netns exec $SRV" C="ip netns exec $CLI"
    $S ip link set lo up; $C ip link set lo up
    $S ip link add cabbr1 type bridge
    $S ip addr add 10.78.0.1/24 dev cabbr1
    $S ip addr add $MD/32 dev cabbr1
    $S ip link set cabbr1 up
    $S ip link add cabv1 type veth peer name cabv1p netns $CLI
    $S ip link set cabv1 master cabbr1 up
    $C ip link set cabv1p address 52:54:00:78:00:10
    $C ip addr add $GUEST_IP/24 dev cabv1p
    $C ip link set cabv1p up
    $C ip route add default via 10.78.0.1
    cat > "$T/fixture.json" <<'J'
{"instances": [{"uuid": "6a6a6a6a-0000-4000-8000-0000000000be", "ec2_id": "i-000000000000000be",
  "name": "bench", "hostname": "bench", "availability_zone": "nova", "instance_type": "m1.small",
  "keys": {"k": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBENCH bench@host"}, "meta": {"role": "bench"},
  "user_data": "#cloud-config\n", "interfaces": [{"mac": "52:54:00:78:00:10", "ip": "10.78.0.10",
  "prefix": 24, "gateway": "10.78.0.1", "dns": ["10.78.0.1"], "network": "n1"}]}]}
J
fi
S="ip netns exec $SRV" C="ip netns exec $CLI"

# ------------------------------------------------------------------ md_server and nginx
$S "${PIN_S[@]}" "$SERVER" --fixture "$T/fixture.json" --listen $MD --port $MD_PORT --network n1 --bind-dev "$BR" \
    --rate 1e9 --burst 1000000000 --ready "$T/ready" 2>"$T/md.log" &
MD_PID=$!
for _ in $(seq 100); do [ -s "$T/ready" ] && break; sleep 0.05; done
[ -s "$T/ready" ] || { echo "md_server did not start: $(cat "$T/md.log")"; exit 1; }

V1=/latest/meta-data/instance-id
PATHS="$V1 /openstack/latest/meta_data.json"
TOKH=X-aws-ec2-metadata-token
token() { $C curl -sf -X PUT -H "$TOKH-ttl-seconds: 21600" "http://$MD:$1/latest/api/token"; }
MD_TOKEN=$(token $MD_PORT) || { echo "md_server: no IMDSv2 token"; exit 1; }
if [ $HAVE_AGENT -eq 1 ]; then
    AG_TOKEN=$(token $AG_PORT) || { echo "agent: no IMDSv2 token"; exit 1; }
    PRIMARY=$AG_PORT
else
    PRIMARY=$MD_PORT
fi
mkdir -p "$T/www" "$T/tmp"
for p in $PATHS; do
    mkdir -p "$T/www$(dirname "$p")"
    $C curl -sf -o "$T/www$p" "http://$MD:$PRIMARY$p" || { echo "cannot fetch $p from :$PRIMARY"; exit 1; }
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
    $NGINX_OPTS
    server { listen $MD:$NG_PORT; root $T/www; }
}
EOF
$S "${PIN_S[@]}" "$NGINX" -c "$T/nginx.conf" -e "$T/nginx-error.log" &
NG_PID=$!
for _ in $(seq 100); do $C curl -sf -o /dev/null "http://$MD:$NG_PORT$V1" && break; sleep 0.05; done
# nginx answers what the primary server does (as many bytes: meta_data.json's random_seed is
# new on each connection); md_server's bytes beside the agent's: their sizes
declare -A SIZE
for p in $PATHS; do
    [ "$($C curl -sf "http://$MD:$PRIMARY$p" | wc -c)" = "$($C curl -sf "http://$MD:$NG_PORT$p" | wc -c)" ] ||
        { echo "nginx and :$PRIMARY answer $p with different sizes"; exit 1; }
    SIZE[md$p]=$($C curl -sf "http://$MD:$MD_PORT$p" | wc -c)
    [ $HAVE_AGENT -eq 1 ] && SIZE[agent$p]=$($C curl -sf "http://$MD:$AG_PORT$p" | wc -c)
done
[ "$($C curl -sf -H "$TOKH: $MD_TOKEN" "http://$MD:$MD_PORT$V1")" = "$($C curl -sf "http://$MD:$MD_PORT$V1")" ] ||
    { echo "md_server: the token's answer differs"; exit 1; }
if [ $HAVE_AGENT -eq 1 ]; then
    [ "$($C curl -sf -H "$TOKH: $AG_TOKEN" "http://$MD:$AG_PORT$V1")" = "$EC2_ID" ] ||
        { echo "agent: $V1 with the token is not $EC2_ID"; exit 1; }
    [ "$($C curl -s -o /dev/null -w '%{http_code}' -H "$TOKH: AAAA" "http://$MD:$AG_PORT$V1")" = 401 ] ||
        { echo "agent: a bad token is not refused: the token is not checked"; exit 1; }
fi

# ------------------------------------------------------------------ the runs
# wrk's "Requests/sec:" and its --latency 99% line (us), and the server's CPU time (user +
# system, all its threads, from /proc) per request in us; non-2xx answers and socket errors
# make the figure invalid (printed as ERR)
TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local t=0 pid x
    for pid in "$@"; do
        x=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) && t=$((t + x))
    done
    echo $t
}
run_wrk() {   # run_wrk URL WRK_HEADER SERVER_PIDS...
    local url=$1 h=() t0 t1
    [ -n "$2" ] && h=(-H "$2")
    shift 2
    t0=$(cpu_ticks "$@")
    $C "${PIN_C[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "${h[@]}" "$url" > "$T/wrk.out" 2>&1
    t1=$(cpu_ticks "$@")
    awk -v ticks=$((t1 - t0)) -v tck="$TCK" '
         / requests in / { n = $1 }
         /Requests\/sec:/ { rps = $2 }
         /Non-2xx or 3xx responses:/ { bad += $NF }
         /Socket errors:/ { gsub(/,/, ""); bad += $4 + $6 + $8 + $10 }
         $1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                       p99 = u == "us" ? v : u == "ms" ? v * 1000 : u == "s" ? v * 1e6 : v }
         END { if (bad || !rps || !n) print "ERR ERR ERR"; else printf "%.0f %.0f %.1f\n", rps, p99, ticks * 1e6 / tck / n }' "$T/wrk.out"
}
SERVERS="md nginx" && [ $HAVE_AGENT -eq 1 ] && SERVERS="agent md nginx"
CASES="v1 os v2 close"
declare -A LABEL
LABEL[v1]=$V1 LABEL[os]=/openstack/latest/meta_data.json LABEL[v2]="$V1 (IMDSv2 token)"
LABEL[close]="$V1 (Connection: close)"
port_of() { case $1 in agent) echo $AG_PORT ;; md) echo $MD_PORT ;; nginx) echo $NG_PORT ;; esac; }
hdr_of() {   # hdr_of CASE SERVER
    case $1 in
    v2) case $2 in agent) echo "$TOKH: $AG_TOKEN" ;; md) echo "$TOKH: $MD_TOKEN" ;; *) echo "$TOKH: $MD_TOKEN" ;; esac ;;
    close) echo "Connection: close" ;;
    esac
}
path_of() { case $1 in os) echo /openstack/latest/meta_data.json ;; *) echo $V1 ;; esac; }
declare -A RPS P99 CPU
NG_WORKER=$(pgrep -P "$NG_PID" | head -1)
[ -n "$NG_WORKER" ] || { echo "no nginx worker"; exit 1; }
pids_of() { case $1 in agent) echo "$AGENT_PID" ;; md) echo "$MD_PID" ;; nginx) echo "$NG_WORKER" ;; esac; }
for rep in $(seq "$REPEAT"); do
    for c in $CASES; do
        for s in $SERVERS; do
            perf_pid=""
            if [ "$s" = agent ] && [ "$rep" = 1 ] && [ -n "$PERF_DIR" ]; then
                mkdir -p "$PERF_DIR"
                perf record -q -F 1999 ${PERF_OPTS:--g} -p "$AGENT_PID" -o "$PERF_DIR/agent-$c.data" 2>/dev/null &
                perf_pid=$!
            fi
            read -r rps p99 cpu < <(run_wrk "http://$MD:$(port_of $s)$(path_of $c)" "$(hdr_of $c $s)" "$(pids_of $s)")
            [ -n "$perf_pid" ] && kill -INT "$perf_pid" && wait "$perf_pid"
            RPS[$s.$c]+="$rps " P99[$s.$c]+="$p99 " CPU[$s.$c]+="$cpu "
        done
    done
done

# median (min-max) of a list; ERR when any run was
spread() { echo "$1" | tr ' ' '\n' | grep -v '^$' | sort -n | awk '
    /ERR/ { err = 1 } { v[NR] = $1 }
    END { if (err || !NR) { print "ERR"; exit } printf "%s (%s-%s)\n", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
median() { spread "$1" | awk '{ print $1 }'; }

echo "metadata: the agent vs md_server (the library) vs nginx (1 worker): wrk -t$THREADS -c$CONNS" \
     "-d${DURATION}s x $REPEAT runs (interleaved) from a guest netns; servers on CPU ${SERVER_CPU:-any}, wrk on CPU ${CLIENT_CPU:-any}"
echo "machine: $(nproc) CPUs; loadavg before: $LOAD_BEFORE; after: $(cat /proc/loadavg) (other load present when the first figure is near or above the CPUs)"
if [ $HAVE_AGENT -eq 1 ]; then
    echo "agent: the libvirt test driver, instance $INSTANCE ($EC2_ID) at $GUEST_IP $GUEST_MAC on n1 ($BR);" \
         "metadata.rate = $MD_RATE/s, metadata.burst = $MD_BURST (raised for the bench: the default is 50/s, burst 100)"
    echo "sizes (agent/md bytes): $(for p in $PATHS; do printf '%s %s/%s  ' "$p" "${SIZE[agent$p]}" "${SIZE[md$p]}"; done)"
else
    echo "${AGENT_NOTE:-agent: not measured (AGENT=0)}"
fi
echo "req/s, p99 (us) and the server's CPU time per request (us, all its threads): median (min-max) of $REPEAT;" \
     "targets: >= 0.5x nginx's req/s, p99 < 2000 us"
rc=0
for c in $CASES; do
    echo "${LABEL[$c]}"
    ng=$(median "${RPS[nginx.$c]}")
    for s in $SERVERS; do
        r=$(median "${RPS[$s.$c]}") p=$(median "${P99[$s.$c]}")
        verdict=""
        if [ "$s" != nginx ]; then
            ratio=$(awk -v a="$r" -v b="$ng" 'BEGIN { if (a == "ERR" || b == "ERR" || b <= 0) print "ERR"; else printf "%.2fx", a / b }')
            rv=$(awk -v x="${ratio%x}" 'BEGIN { print (x != "ERR" && x >= 0.5) ? "PASS" : "MISS" }')
            pv=$(awk -v x="$p" 'BEGIN { print (x != "ERR" && x < 2000) ? "PASS" : "MISS" }')
            verdict=$(printf "%6s/nginx %-4s p99 %-4s" "$ratio" "$rv" "$pv")
            [ "$rv$pv" = PASSPASS ] || rc=1
        fi
        printf "  %-6s %24s req/s %22s us p99 %20s CPU us/req  %s\n" "$s" "$(spread "${RPS[$s.$c]}")" \
               "$(spread "${P99[$s.$c]}")" "$(spread "${CPU[$s.$c]}")" "$verdict"
    done
done
[ $rc -eq 0 ] && echo "targets met (>= 0.5x nginx, p99 < 2 ms)" || echo "TARGETS MISSED (>= 0.5x nginx, p99 < 2 ms)"
exit $rc
