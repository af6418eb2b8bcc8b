#!/bin/bash
# Telemetry's per-guest cost with real QEMU guests: the agent's CPU time over
# WALL seconds of sampling every second with no guest, then with N guests
# (TCG, the test guest), on a real libvirtd. Skips without libvirtd or the
# test guest. Usage: bench-telemetry-qemu.sh BUILD_DIR [N] [WALL]
set -u
B=${1:?build dir}; N=${2:-4}; WALL=${3:-30}
URI=${CA_LIBVIRT_URI:-qemu:///system}
G=${CA_GUEST_DIR:-${CA_CACHE_DIR:-$HOME/.cache/compute-agent-tests}/guest}
virsh -c "$URI" version >/dev/null 2>&1 || { echo "SKIP: no libvirtd at $URI"; exit 0; }
[ -f "$G/vmlinuz" ] || { echo "SKIP: no test guest in $G (tests/env/build-guest.sh)"; exit 0; }
D=$(mktemp -d /tmp/ca-bench-tq-XXXXXX)
"$B/compute-agent" --state-dir "$D" --hypervisor qemu --libvirt-uri "$URI" --telemetry-interval 1 --local-image-dirs "$G" \
    --log-level warn 2>"$D/agent.log" &
P=$!
trap 'kill $P 2>/dev/null; wait $P 2>/dev/null; rm -rf "$D"' EXIT
C=(curl -s --unix-socket "$D/api.sock" -H Content-Type:application/json)
for i in $(seq 300); do "${C[@]}" http://x/healthz | grep -q '"ok"' && break; sleep 0.1; done
cpu() { awk '{print $14+$15}' /proc/$P/stat; }   # utime+stime, clock ticks
HZ=$(getconf CLK_TCK)
c0=$(cpu); sleep "$WALL"; c1=$(cpu)              # a measurement window, not an event wait
idle=$(echo "scale=4; ($c1-$c0)/$HZ" | bc)
ids=()
for i in $(seq "$N"); do
    r=$("${C[@]}" http://x/v1/instances -d "{\"name\":\"tq$i\",\"flavor\":{\"vcpus\":1,\"memory_mb\":128,\"disk_gb\":0},\"kernel\":{\"path\":\"$G/vmlinuz\",\"initrd\":\"$G/initrd.gz\",\"cmdline\":\"console=ttyS0 panic=-1 quiet\"}}")
    ids+=("$(echo "$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["instance"]["id"])')")
    op=$(echo "$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["operation"]["id"])')
    "${C[@]}" "http://x/v1/operations/$op?wait=120" >/dev/null
done
c0=$(cpu); sleep "$WALL"; c1=$(cpu)
busy=$(echo "scale=4; ($c1-$c0)/$HZ" | bc)
series=$("${C[@]}" http://x/metrics | grep -c "instance_uuid=")
for id in "${ids[@]}"; do
    op=$("${C[@]}" -X DELETE "http://x/v1/instances/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["operation"]["id"])')
    "${C[@]}" "http://x/v1/operations/$op?wait=60" >/dev/null
done
per=$(echo "scale=3; ($busy-$idle)*1000000/($N*$WALL)" | bc)
echo "== telemetry with $N real QEMU guests, sampling every 1 s for $WALL s =="
echo "agent CPU s: no guest $idle, $N guests $busy (baseline: the same agent with no guest)"
echo "per guest per round: $per us of agent CPU; /metrics series with an instance label: $series"
