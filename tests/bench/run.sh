#!/bin/bash
# make bench: every benchmark, each printing its figures beside a baseline
# measured in the same run. Usage: tests/bench/run.sh BUILD_DIR
set -u
B=${1:?build dir}
rc=0
for t in "$B"/tests/bench_*; do
    [ -x "$t" ] || continue
    echo "### $(basename "$t")"
    "$t" "$B" || rc=1
    echo
done
for s in "$(dirname "$0")"/bench-*.sh; do
    [ -x "$s" ] || continue
    echo "### $(basename "$s")"
    "$s" "$B" || rc=1
    echo
done
exit $rc
