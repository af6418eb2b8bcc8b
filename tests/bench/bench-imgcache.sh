#!/bin/bash
# make bench: the image cache's figures (tests/bench/bench-imgcache.c): a 1 GiB
# pull with digest checking beside curl -o, 32 concurrent acquires, overlay
# creation on a 100 MiB and a 10 GiB base. Usage: bench-imgcache.sh BUILD_DIR [ARGS...]
# (ARGS go to the program: --size-mb N, --rounds N, --dir DIR).
set -u
B=${1:?build dir}
shift
bin="$B/tests/bench-imgcache"
[ -x "$bin" ] || { echo "bench-imgcache: $bin not built (make tests)"; exit 1; }
"$bin" "$@"
rc=$?
# 77: nginx, curl or qemu-img missing; the program said which
[ $rc -eq 77 ] && exit 0
exit $rc
