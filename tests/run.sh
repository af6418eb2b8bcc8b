#!/bin/bash
# tests/run.sh BUILD_DIR [PATTERN]   (what `make check` runs)
#
# 1. Runs every BUILD_DIR/tests/unit-* (stdout+stderr captured; cmocka reports on stderr).
# 2. Runs every BUILD_DIR/tests/component-* (C tests against real local services, from
#    tests/component/), then every tests/integration/*.sh (bash) and
#    tests/integration/test_*.py (python3), in sorted order, after setting up their
#    environment (only if some of these are selected):
#      as root: builds the test guest into ${CA_CACHE_DIR:-~/.cache/compute-agent-tests}/guest
#               and starts a private libvirtd unless one answers on qemu:///system
#               (tests/env/libvirtd.sh: shared by concurrent runs, stopped by the last);
#      if installed: OpenStack Placement and nginx on free loopback ports.
#      as root, when a selected test needs it (named test_net_*, or with a line
#               "# needs: netns" in its first 30 lines): a test network namespace with a
#               private libvirtd inside (tests/env/netns.sh; bridges, taps and guests of
#               those tests live there, never in the machine's root namespace).
#    Exported to the tests: BUILD, CA_LIBVIRT_URI, CA_GUEST_DIR, CA_PLACEMENT_URL,
#    CA_NGINX_URL, CA_NGINX_ROOT, CA_NETNS, CA_NETNS_LIBVIRT_URI, CA_NETNS_DIR (each only
#    when available; a value already set by the caller is kept and the matching service is
#    not started; CA_NETNS_NAME names the namespace, default ca-netns-<pid>).
# 3. Host network check (whenever a test other than unit-* runs): the root network
#    namespace (`ip -o link`, `ip -o addr`, `ip route`, `ip -6 route`, `ip rule`,
#    `nft -s list ruleset`, `ip netns list`) is snapshotted before the environment is set
#    up and compared after the tests and the netns env are gone; a difference is a failed
#    check named "host network changed" with the diff. Volatile fields (address
#    lifetimes, route expiry) are left out. CA_HOSTNET_IGNORE_NETNS (extended regex) leaves
#    namespaces of concurrent runs on a shared machine out of the comparison.
# Everything started here is stopped on exit (trap).
#
# Each test runs under `timeout ${CA_TEST_TIMEOUT:-600}`. Exit 0 = PASS, 77 = SKIP (the
# last output line is shown as the reason), anything else = FAIL (its output is shown).
# CA_REQUIRE_CORE=1 turns the SKIP of a test whose name contains "qemu" or "core" into a
# FAIL. PATTERN (extended regex) keeps only the tests whose name matches, e.g.
# `tests/run.sh build unit-` or `tests/run.sh build 'test_api|lifecycle'`.
# Logs: BUILD_DIR/test-logs/<test>.log (and env.log for the services).
set -uo pipefail
# Debian's python3 has the packages the tests use (jsonschema, yaml, confluent_kafka);
# a python3 earlier on PATH (pyenv, venv) may not.
PYTHON=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )}
export PYTHON

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 BUILD_DIR [PATTERN]" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -d "$1" ] || { echo "run.sh: build dir $1 does not exist (run make first)" >&2; exit 2; }
BUILD=$(cd "$1" && pwd)
PATTERN=${2:-}
TEST_TIMEOUT=${CA_TEST_TIMEOUT:-600}
LOGDIR=$BUILD/test-logs
mkdir -p "$LOGDIR"
ENVLOG=$LOGDIR/env.log
: > "$ENVLOG"

say() { echo "run.sh: $*"; }
now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- test list
tests=()   # entries "kind:path"
for f in "$BUILD"/tests/unit-*; do
    [ -f "$f" ] && [ -x "$f" ] || continue
    tests+=("unit:$f")
done
for f in "$BUILD"/tests/component-*; do
    [ -f "$f" ] && [ -x "$f" ] || continue
    tests+=("component:$f")
done
integ=()
for f in "$ROOT"/tests/integration/*.sh "$ROOT"/tests/integration/test_*.py; do
    [ -f "$f" ] && integ+=("$f")
done
if [ ${#integ[@]} -gt 0 ]; then
    while IFS= read -r f; do
        case $f in *.py) tests+=("py:$f") ;; *) tests+=("sh:$f") ;; esac
    done < <(printf '%s\n' "${integ[@]}" | LC_ALL=C sort)
fi

test_name() { # kind:path -> display name
    local kind=${1%%:*} path=${1#*:}
    case $kind in
        unit|component) echo "${path##*/}" ;;
        *) echo "integration/${path##*/}" ;;
    esac
}

selected=()
for t in "${tests[@]}"; do
    n=$(test_name "$t")
    if [ -n "$PATTERN" ] && ! [[ $n =~ $PATTERN ]]; then continue; fi
    selected+=("$t")
done
if [ ${#selected[@]} -eq 0 ]; then
    if [ -n "$PATTERN" ]; then
        say "no test matches '$PATTERN'"
        exit 1
    fi
    say "no tests found (looked in $BUILD/tests/unit-*, $BUILD/tests/component-* and $ROOT/tests/integration/)"
    exit 0
fi
need_env=0
need_netns=0
for t in "${selected[@]}"; do
    case $t in unit:*) ;; *) need_env=1 ;; esac
    case $t in
        py:*/test_net_*|sh:*/test_net_*) need_netns=1 ;;
        py:*|sh:*) head -n 30 "${t#*:}" | grep -q '^# needs: netns' && need_netns=1 ;;
    esac
done

# ---------------------------------------------------------------- host network snapshot
hostnet_snapshot() { # what the tests must leave exactly as it was, one section per command
    local ign=${CA_HOSTNET_IGNORE_NETNS:-}
    echo "## ip -o link"; ip -o link 2>&1
    echo "## ip -o addr"; ip -o addr 2>&1 | sed -E 's/ +valid_lft [^ ]+ preferred_lft [^ ]+//'
    echo "## ip route"; ip route 2>&1 | sed -E 's/ expires [^ ]+//'
    echo "## ip -6 route"; ip -6 route 2>&1 | sed -E 's/ expires [^ ]+//'
    echo "## ip rule"; ip rule 2>&1
    if command -v nft >/dev/null 2>&1; then echo "## nft -s list ruleset"; nft -s list ruleset 2>&1; fi
    echo "## ip netns list"
    ip netns list 2>&1 | awk '{print $1}' | { if [ -n "$ign" ]; then grep -Ev -- "$ign"; else cat; fi; } | LC_ALL=C sort
}
HOSTNET_BEFORE=""
if [ $need_env -eq 1 ] && command -v ip >/dev/null 2>&1; then
    HOSTNET_BEFORE=$(mktemp /tmp/ca-hostnet.XXXXXX)
    hostnet_snapshot > "$HOSTNET_BEFORE"
fi

# ---------------------------------------------------------------- environment
ENVDIR=""
TEST_PID=""
STARTED=()   # "libvirtd" "placement" "nginx" "netns"
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i s
    if [ -n "$TEST_PID" ] && kill -0 "$TEST_PID" 2>/dev/null; then
        say "interrupted: stopping the running test (pid $TEST_PID)"
        kill -TERM "$TEST_PID" 2>/dev/null
        for i in $(seq 100); do kill -0 "$TEST_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$TEST_PID" 2>/dev/null
        wait "$TEST_PID" 2>/dev/null
    fi
    [ -n "$HOSTNET_BEFORE" ] && rm -f "$HOSTNET_BEFORE"
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        s=${STARTED[$i]}
        "$ROOT/tests/env/$s.sh" stop "$ENVDIR/$s" >>"$ENVLOG" 2>&1 || say "stopping $s failed (see $ENVLOG)"
    done
    if [ -n "$ENVDIR" ] && [ -d "$ENVDIR" ]; then
        if [ "${CA_KEEP_ENV:-0}" = 1 ]; then
            say "kept environment dir $ENVDIR"
        else
            # keep the service logs next to the test logs
            for s in libvirtd placement nginx netns; do
                [ -d "$ENVDIR/$s" ] || continue
                mkdir -p "$LOGDIR/$s"
                cp -f "$ENVDIR/$s"/*.log "$LOGDIR/$s/" 2>/dev/null || true
            done
            rm -rf "$ENVDIR"
        fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free loopback TCP port: $1 if free, else one the kernel picks.
free_port() {
    python3 - "$1" <<'EOF'
import socket, sys
want = int(sys.argv[1])
for p in (want, 0):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
    try:
        s.bind(("127.0.0.1", p))
        print(s.getsockname()[1])
        break
    except OSError:
        pass
    finally:
        s.close()
EOF
}

export BUILD
if [ $need_env -eq 1 ]; then
    ENVDIR=$(mktemp -d /tmp/ca-tests.XXXXXX)
    say "setting up the integration environment in $ENVDIR (log: $ENVLOG)"
    if [ "$(id -u)" -eq 0 ]; then
        CACHE=${CA_CACHE_DIR:-${HOME:-/root}/.cache/compute-agent-tests}
        if [ -z "${CA_GUEST_DIR:-}" ]; then
            t0=$(now)
            if "$ROOT/tests/env/build-guest.sh" "$CACHE/guest" >>"$ENVLOG" 2>&1; then
                export CA_GUEST_DIR=$CACHE/guest
                say "test guest: $CA_GUEST_DIR ($(elapsed "$t0" "$(now)")s)"
            else
                say "WARNING: building the test guest failed (see $ENVLOG); CA_GUEST_DIR unset"
            fi
        fi
        if [ $need_netns -eq 1 ] && [ -z "${CA_NETNS_LIBVIRT_URI:-}" ]; then
            t0=$(now)
            STARTED+=(netns)
            if CA_NETNS_NAME=${CA_NETNS_NAME:-ca-netns-$$} \
               "$ROOT/tests/env/netns.sh" start "$ENVDIR/netns" >>"$ENVLOG" 2>&1 &&
               [ -s "$ENVDIR/netns/env" ]; then
                # KEY='value' lines written by netns.sh
                while IFS='=' read -r k v; do
                    case $k in CA_NETNS|CA_NETNS_LIBVIRT_URI|CA_NETNS_DIR) v=${v#\'}; export "$k=${v%\'}" ;; esac
                done < "$ENVDIR/netns/env"
                say "netns: $CA_NETNS, libvirtd at $CA_NETNS_LIBVIRT_URI ($(elapsed "$t0" "$(now)")s)"
            else
                say "WARNING: starting the netns env failed (see $ENVLOG); CA_NETNS unset"
            fi
        fi
        if [ -z "${CA_LIBVIRT_URI:-}" ]; then
            if command -v libvirtd >/dev/null 2>&1 || command -v virsh >/dev/null 2>&1; then
                t0=$(now)
                STARTED+=(libvirtd)
                if "$ROOT/tests/env/libvirtd.sh" start "$ENVDIR/libvirtd" >>"$ENVLOG" 2>&1; then
                    export CA_LIBVIRT_URI=qemu:///system
                    if [ -e "$ENVDIR/libvirtd/reused" ]; then
                        say "libvirtd: reusing the one answering on qemu:///system"
                    else
                        say "libvirtd: ready, pid $(cat "$ENVDIR/libvirtd/libvirtd.pid" 2>/dev/null) ($(elapsed "$t0" "$(now)")s)"
                    fi
                else
                    say "WARNING: starting libvirtd failed (see $ENVLOG); CA_LIBVIRT_URI unset"
                fi
            else
                say "libvirt is not installed; CA_LIBVIRT_URI unset"
            fi
        fi
    else
        say "not root: no test guest, no libvirtd (qemu tests will skip)"
    fi
    if [ -z "${CA_PLACEMENT_URL:-}" ] && command -v placement-api >/dev/null 2>&1; then
        t0=$(now)
        STARTED+=(placement)
        if url=$(PLACEMENT_PORT=${PLACEMENT_PORT:-$(free_port 8778)} \
                 "$ROOT/tests/env/placement.sh" start "$ENVDIR/placement" 2>>"$ENVLOG"); then
            export CA_PLACEMENT_URL=$url
            say "placement: $CA_PLACEMENT_URL ($(elapsed "$t0" "$(now)")s)"
        else
            say "WARNING: starting placement failed (see $ENVLOG); CA_PLACEMENT_URL unset"
        fi
    fi
    if [ -z "${CA_NGINX_URL:-}" ] && { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }; then
        STARTED+=(nginx)
        if url=$(NGINX_PORT=${NGINX_PORT:-$(free_port 8779)} \
                 "$ROOT/tests/env/nginx.sh" start "$ENVDIR/nginx" 2>>"$ENVLOG"); then
            export CA_NGINX_URL=$url CA_NGINX_ROOT=$ENVDIR/nginx/www
            say "nginx: $CA_NGINX_URL serving $CA_NGINX_ROOT"
        else
            say "WARNING: starting nginx failed (see $ENVLOG); CA_NGINX_URL unset"
        fi
    fi
fi

# Sanitizer builds: make UBSan findings fail the test instead of only printing.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Known leaks in libraries (not ours) can be listed in tests/lsan.supp.
if [ -z "${LSAN_OPTIONS:-}" ] && [ -f "$ROOT/tests/lsan.supp" ]; then
    export LSAN_OPTIONS=suppressions=$ROOT/tests/lsan.supp:print_suppressions=0
fi
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

# ---------------------------------------------------------------- run
results=()   # "name|RESULT|seconds|note"
nfail=0 npass=0 nskip=0
for t in "${selected[@]}"; do
    kind=${t%%:*}
    path=${t#*:}
    name=$(test_name "$t")
    log=$LOGDIR/${name//\//_}.log
    case $kind in
        unit|component) cmd=("$path") ;;
        sh) cmd=(bash "$path") ;;
        py) cmd=("$PYTHON" "$path") ;;
    esac
    echo "=== RUN  $name"
    t0=$(now)
    # In the background + wait, so that a signal to run.sh is handled at once (cleanup
    # stops the running test, then the services).
    (cd "$ROOT" && exec timeout --kill-after=15 "$TEST_TIMEOUT" "${cmd[@]}") </dev/null >"$log" 2>&1 &
    TEST_PID=$!
    wait "$TEST_PID"
    rc=$?
    TEST_PID=""
    dur=$(elapsed "$t0" "$(now)")
    note=""
    if [ $rc -eq 0 ]; then
        res=PASS
    elif [ $rc -eq 77 ]; then
        res=SKIP
        note=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | cut -c1-160)
        [ -n "$note" ] || note="(no reason given)"
        if [ "${CA_REQUIRE_CORE:-0}" = 1 ] && [[ ${name##*/} == *qemu* || ${name##*/} == *core* ]]; then
            res=FAIL
            note="skipped but CA_REQUIRE_CORE=1: $note"
        fi
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        res=FAIL
        note="timed out after ${TEST_TIMEOUT}s"
    else
        res=FAIL
        note="exit status $rc"
    fi
    case $res in
        PASS) npass=$((npass + 1)); echo "--- PASS $name (${dur}s)" ;;
        SKIP) nskip=$((nskip + 1)); echo "--- SKIP $name (${dur}s): $note" ;;
        FAIL)
            nfail=$((nfail + 1))
            echo "--- FAIL $name (${dur}s): $note"
            echo "----- output of $name (last 200 lines; full log $log) -----"
            tail -n 200 "$log"
            echo "----- end of $name -----"
            ;;
    esac
    results+=("$name|$res|$dur|${note//|//}")
done

# ---------------------------------------------------------------- host network check
if [ -n "$HOSTNET_BEFORE" ]; then
    # The netns env goes first: its namespace must be gone before the comparison.
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        [ "${STARTED[$i]}" = netns ] || continue
        "$ROOT/tests/env/netns.sh" stop "$ENVDIR/netns" >>"$ENVLOG" 2>&1 || say "stopping netns failed (see $ENVLOG)"
        mkdir -p "$LOGDIR/netns"
        cp -f "$ENVDIR/netns"/*.log "$LOGDIR/netns/" 2>/dev/null || true
        unset 'STARTED[i]'
    done
    STARTED=("${STARTED[@]}")
    name="host network changed"
    if hdiff=$(diff -u --label before --label after "$HOSTNET_BEFORE" <(hostnet_snapshot)); then
        results+=("host network unchanged|PASS|0.0|")
        npass=$((npass + 1))
    else
        nfail=$((nfail + 1))
        echo "--- FAIL $name: the root network namespace differs from before the run"
        echo "$hdiff"
        echo "$hdiff" > "$LOGDIR/host-network.diff"
        results+=("$name|FAIL|0.0|diff in $LOGDIR/host-network.diff")
    fi
fi

# ---------------------------------------------------------------- summary
echo
echo "==================== test summary ===================="
w=4
for r in "${results[@]}"; do n=${r%%|*}; [ ${#n} -gt $w ] && w=${#n}; done
printf "%-${w}s  %-6s %9s  %s\n" TEST RESULT TIME NOTE
for r in "${results[@]}"; do
    IFS='|' read -r n res dur note <<<"$r"
    printf "%-${w}s  %-6s %8ss  %s\n" "$n" "$res" "$dur" "$note"
done
echo "------------------------------------------------------"
echo "$npass passed, $nskip skipped, $nfail failed (of ${#results[@]}); logs in $LOGDIR"
[ $nfail -eq 0 ]
