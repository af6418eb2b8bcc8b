#!/bin/bash
# Issue 12's benchmarks (make bench), each figure beside its baseline from the same run:
#  - bench-resize-test (C, tests/bench/bench-resize-test.c): live resizes per second
#    through the agent on libvirt's test driver beside the raw libvirt calls (target >= 0.5x);
#  - bench_resize_qemu.py: a real QEMU guest's live resize latency beside raw
#    `virsh setvcpus --live` / `setmem --live` (target <= 1.2x) and its cold resize
#    beside `virsh shutdown` + `define` + `start` (target <= 1.1x plus the guest's shutdown).
# Usage: bench-resize.sh BUILD_DIR [N]   (N: test-driver resizes, default 1000)
# Something missing (not root, no QEMU, no guest): that part prints SKIP and the reason.
set -u
B=${1:?build dir}
N=${2:-1000}
here=$(dirname "$0")
rc=0
bin="$B/tests/bench-resize-test"
if [ -x "$bin" ]; then
    "$bin" "$B" "$N"
    r=$?
    [ $r -eq 77 ] || [ $r -eq 0 ] || rc=1
else
    echo "bench-resize-test: $bin not built (make tests)"
    rc=1
fi
echo
py=$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )
"${PYTHON:-$py}" "$here/bench_resize_qemu.py" "$B" || rc=1
exit $rc
