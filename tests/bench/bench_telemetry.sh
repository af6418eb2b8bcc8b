#!/bin/bash
# tests/bench/bench_telemetry.sh BUILD_DIR
#
# Telemetry at 1000 domains: the agent's telemetry module (BUILD/tests/
# bench_telemetry run ...) beside prometheus-libvirt-exporter (Debian), both
# on the same generated test:/// node file (1000 running domains, each with a
# disk and an interface), in the same run, at the same rate:
#   phase 1: every 1 s for BENCH_WALL_1S seconds (default 60)
#   phase 2: every 10 s for BENCH_WALL_10S seconds (default 60)
# The exporter is scraped with curl at the interval. Printed per side: CPU
# seconds, per-round/per-scrape CPU, RSS, and how many domains each side
# actually reported; then the ratios and the issue's targets.
#
# Note: libvirt 9.0's test driver fills only the `state` group of the bulk
# statistics, so counters are zero/absent on both sides; this measures the
# sampling, rate, JSON and scrape machinery at scale, not guest counters.
# The exporter reopens its libvirt connection on every scrape; with test:///
# that means re-parsing the node file each time (that is what it costs).
set -uo pipefail

B=${1:?usage: $0 BUILD_DIR}
DRIVER=$B/tests/bench_telemetry
N=${BENCH_DOMAINS:-1000}
WALL1=${BENCH_WALL_1S:-60}
WALL10=${BENCH_WALL_10S:-60}
EXPORTER=$(command -v prometheus-libvirt-exporter || true)

[ -x "$DRIVER" ] || { echo "bench_telemetry.sh: SKIP: $DRIVER not built"; exit 0; }
command -v python3 >/dev/null || { echo "bench_telemetry.sh: SKIP: python3 missing"; exit 0; }

WORK=$(mktemp -d /tmp/ca-bench-telemetry.XXXXXX)
EXP_PID=""
cleanup() {
    [ -n "$EXP_PID" ] && kill "$EXP_PID" 2>/dev/null && wait "$EXP_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- the node file
python3 - "$N" "$WORK/node.xml" <<'EOF'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
out = ["<node>",
       "<cpu><mode>32</mode><nodes>1</nodes><sockets>1</sockets><cores>16</cores>"
       "<threads>2</threads><active>32</active><mhz>2000</mhz><model>x86_64</model></cpu>",
       "<memory>67108864</memory>"]
for i in range(n):
    out.append(
        f"<domain type='test'><name>bench-{i:04d}</name>"
        f"<uuid>00000000-0000-4000-8000-{i:012x}</uuid>"
        "<memory>131072</memory><currentMemory>131072</currentMemory><vcpu>1</vcpu>"
        "<os><type>hvm</type></os><devices>"
        f"<disk type='file' device='disk'><source file='/var/lib/bench/{i}.qcow2'/>"
        "<target dev='vda' bus='virtio'/></disk>"
        f"<interface type='network'><mac address='52:54:00:{(i >> 16) & 255:02x}:"
        f"{(i >> 8) & 255:02x}:{i & 255:02x}'/><source network='default'/>"
        f"<target dev='vnet{i}'/></interface></devices></domain>")
out.append("</node>")
open(path, "w").write("\n".join(out) + "\n")
EOF
URI="test://$WORK/node.xml"
echo "node file: $N running domains (disk + interface each), $URI"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
proc_cpu() { # pid -> utime+stime seconds
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"
}
proc_kb() { # pid key -> kB
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}
kv() { # "RESULT a=1 b=2" key -> value
    tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'
}

# ---- exporter side (runs concurrently with the agent side): scrape every
# $1 s for $2 s; prints "RESULT side=exporter ..."
exporter_side() {
    local interval=$1 wall=$2 port pid cpu0 cpu1 rss0 t0 t_end n=0 fails=0 tsum=0 t doms=0
    port=$(free_port)
    "$EXPORTER" --libvirt.uri="$URI" --web.listen-address="127.0.0.1:$port" \
        >"$WORK/exporter.log" 2>&1 &
    pid=$!
    EXP_PID=$pid
    # ready = answers on its port (deadline 10 s)
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "RESULT side=exporter error=exited"
        return
    fi
    cpu0=$(proc_cpu "$pid")
    rss0=$(proc_kb "$pid" VmRSS)
    t0=$(date +%s.%N)
    t_end=$(awk -v a="$t0" -v w="$wall" 'BEGIN { printf "%.3f", a + w - 0.05 }')
    local next=$t0
    while awk -v n="$next" -v e="$t_end" 'BEGIN { exit !(n < e) }'; do
        if t=$(curl -s -m 30 -o "$WORK/scrape.txt" -w '%{time_total}' "http://127.0.0.1:$port/metrics"); then
            n=$((n + 1))
            tsum=$(awk -v a="$tsum" -v b="$t" 'BEGIN { print a + b }')
        else
            fails=$((fails + 1))
        fi
        next=$(awk -v a="$next" -v i="$interval" 'BEGIN { printf "%.3f", a + i }')
        local now
        now=$(date +%s.%N)
        local d
        d=$(awk -v a="$next" -v b="$now" 'BEGIN { d = a - b; printf "%.3f", (d > 0 ? d : 0) }')
        awk -v n="$next" -v e="$t_end" 'BEGIN { exit !(n < e) }' && sleep "$d"
    done
    cpu1=$(proc_cpu "$pid")
    if [ -s "$WORK/scrape.txt" ]; then
        doms=$(grep -o 'domain="[^"]*"' "$WORK/scrape.txt" | sort -u | wc -l)
    fi
    echo "RESULT side=exporter interval_s=$interval scrapes=$n failed=$fails domains=$doms" \
         "cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.3f", b - a }')" \
         "cpu_per_scrape_ms=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$n" 'BEGIN { printf "%.2f", n ? (b - a) / n * 1000 : 0 }')" \
         "scrape_wall_ms=$(awk -v s="$tsum" -v n="$n" 'BEGIN { printf "%.1f", n ? s / n * 1000 : 0 }')" \
         "scrape_bytes=$(stat -c %s "$WORK/scrape.txt" 2>/dev/null || echo 0)" \
         "rss_start_kb=$rss0 rss_end_kb=$(proc_kb "$pid" VmRSS) hwm_kb=$(proc_kb "$pid" VmHWM)"
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    EXP_PID=""
}

phase() {
    local interval=$1 wall=$2 agent exp
    echo
    echo "== every ${interval} s for ${wall} s =="
    "$DRIVER" run "$URI" "$interval" "$wall" >"$WORK/agent.out" 2>"$WORK/agent.err" &
    local apid=$!
    if [ -n "$EXPORTER" ]; then
        exp=$(exporter_side "$interval" "$wall")
    else
        exp="RESULT side=exporter error=not-installed"
    fi
    wait "$apid"
    agent=$(grep '^RESULT' "$WORK/agent.out")
    [ -n "$agent" ] || { echo "agent side failed:"; cat "$WORK/agent.err"; return 1; }
    echo "$agent"
    echo "$exp"
    local a_cpu a_rounds a_dom a_rss0 a_rss1 a_rssf a_round_ms a_render e_cpu e_n e_dom e_hwm e_scrape
    a_cpu=$(kv "$agent" cpu_s); a_rounds=$(kv "$agent" rounds); a_dom=$(kv "$agent" domains)
    a_rss0=$(kv "$agent" rss_before_kb); a_rssf=$(kv "$agent" rss_first_round_kb)
    a_rss1=$(kv "$agent" rss_end_kb); a_round_ms=$(kv "$agent" cpu_per_round_ms)
    a_render=$(kv "$agent" render_ms_per_scrape)
    e_cpu=$(kv "$exp" cpu_s); e_n=$(kv "$exp" scrapes); e_dom=$(kv "$exp" domains)
    e_hwm=$(kv "$exp" hwm_kb); e_scrape=$(kv "$exp" cpu_per_scrape_ms)
    printf '  agent:    %s rounds, %s domains reported, %.3f CPU s (%.2f ms/round incl. libvirt test driver; %.2f ms/scrape render), RSS %s kB -> %s kB (first round %s kB)\n' \
        "$a_rounds" "$a_dom" "$a_cpu" "$a_round_ms" "$a_render" "$a_rss0" "$a_rss1" "$a_rssf"
    printf '            = %.3f%% of one core while sampling every %s s\n' \
        "$(awk -v c="$a_cpu" -v w="$wall" 'BEGIN { print c / w * 100 }')" "$interval"
    if [ -n "$e_cpu" ]; then
        printf '  exporter: %s scrapes, %s domains reported, %.3f CPU s (%.2f ms/scrape), peak RSS %s kB\n' \
            "$e_n" "$e_dom" "$e_cpu" "$e_scrape" "$e_hwm"
        awk -v a="$a_cpu" -v e="$e_cpu" -v ar="$a_rounds" -v en="$e_n" -v ad="$a_dom" -v ed="$e_dom" 'BEGIN {
            if (e > 0) printf "  ratio agent/exporter CPU: %.4f (target < 0.2)\n", a / e;
            if (ar > 0 && en > 0 && ed > 0 && ad > 0)
                printf "  per domain per round: agent %.1f us, exporter %.1f us (ratio %.4f)\n",
                       a / ar / ad * 1e6, e / en / ed * 1e6, (a / ar / ad) / (e / en / ed);
        }'
    else
        echo "  exporter: $exp"
    fi
    awk -v r0="$a_rssf" -v r1="$a_rss1" 'BEGIN { printf "  agent RSS growth after the first round: %.1f MB (target < 10 MB)\n", (r1 - r0) / 1024 }'
    echo "$agent" >>"$WORK/all"
}

[ -n "$EXPORTER" ] || echo "NOTE: prometheus-libvirt-exporter not installed (apt-get install -y prometheus-libvirt-exporter); agent side only"
phase 1 "$WALL1" || exit 1
phase 10 "$WALL10" || exit 1
a10=$(tail -n 1 "$WORK/all")
awk -v c="$(kv "$a10" cpu_s)" -v w="$WALL10" 'BEGIN {
    printf "\nsummary: agent at %s domains every 10 s: %.3f%% of one core (target < 2%%)\n", "'"$N"'", c / w * 100 }'
