#!/bin/bash
# tests/env/netns.sh start|stop|status DIR
#                    exec DIR CMD...     run CMD in the env's network namespace
#                    enter DIR CMD...    run CMD in the private libvirtd's network, mount and UTS
#                                        namespaces (sees the private /run/libvirt & co)
#
# A test network of its own: a network namespace (name from CA_NETNS_NAME, default
# ca-netns-<pid>) with a PRIVATE virtlogd + libvirtd running inside it, in their own mount
# and UTS namespaces. Bridges, taps, 169.254.169.254, nft tables and the guests' QEMU all
# live in that namespace; the machine's root network namespace is never touched.
#
# All of the daemons' state is bind-mounted from DIR inside their mount namespace:
#   /run/libvirt       <- DIR/run      (virtlogd-sock, qemu/ runtime state)
#   /var/lib/libvirt   <- DIR/lib
#   /var/log/libvirt   <- DIR/log      (qemu/<domain>.log)
#   /var/cache/libvirt <- DIR/cache    (QEMU capabilities: seeded from and saved back to
#                                       ${CA_CACHE_DIR:-~/.cache/compute-agent-tests}/netns-libvirt-cache,
#                                       which saves the ~7.6 s cold QEMU probe)
#   /etc/libvirt       <- DIR/etc      (qemu.conf from tests/env; persistent domain XMLs)
# The socket is DIR/sock/libvirt-sock (unix_sock_dir in DIR/libvirtd.conf), so clients in
# the root mount namespace reach it with
#   qemu+unix:///system?socket=DIR/sock/libvirt-sock
# This coexists with tests/env/libvirtd.sh (qemu:///system, /run/libvirt of the root mount
# namespace): different sockets, different state, different virtlogd.
#
# `start` prints (stdout, shell syntax) and writes DIR/env:
#   CA_NETNS=<namespace>  CA_NETNS_LIBVIRT_URI=<uri>  CA_NETNS_DIR=<DIR>
# Logs go to stderr. Exit 0 when the QEMU driver answers.
#
# Which namespace a process needs:
#   - the agent, a metadata/HTTP server, a client that must reach 169.254.169.254 or a guest,
#     `ip`/`nft` inspection:   ip netns exec $CA_NETNS CMD          (network namespace only;
#     libvirt is reached through the socket URI above, which is a path in DIR)
#   - something that must see the daemon's private /run/libvirt, /var/lib/libvirt,
#     /var/log/libvirt or /etc/libvirt under their usual names (libvirt's own status XML,
#     virsh console with the default URI):  tests/env/netns.sh enter DIR CMD
#     (= nsenter -t <libvirtd pid> -n -m -u CMD)
#
# `stop` destroys and undefines every domain of the private libvirtd, stops libvirtd and
# virtlogd by their recorded pids (checking /proc/PID/comm), terminates any process still in
# the namespace (they can only have been started for this env: QEMU, test servers, agents),
# deletes the namespace (which removes its bridges, taps, addresses and nft tables) and
# saves the capabilities cache. Idempotent; safe after a failed start.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
START_DEADLINE=${CA_NETNS_START_TIMEOUT:-30}   # seconds for the socket to appear
VERIFY_TIMEOUT=${CA_NETNS_VERIFY_TIMEOUT:-90}  # first call probes QEMU (7.6 s cold here)
CACHE=${CA_CACHE_DIR:-${HOME:-/root}/.cache/compute-agent-tests}/netns-libvirt-cache

usage() { echo "usage: $0 start|stop|status DIR | exec|enter DIR CMD..." >&2; exit 2; }
log() { echo "netns.sh: $*" >&2; }

[ $# -ge 2 ] || usage
CMD=$1
DIR=$2
shift 2

alive() { # pid: running and not a zombie
    [ -r "/proc/$1/stat" ] || return 1
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "${st%% *}" != Z ]
}

live_pid() { # pidfile comm -> pid if alive with that comm
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -dc '0-9' < "$1")
    [ -n "$pid" ] && alive "$pid" || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    echo "$pid"
}

stop_pid() { # pid what
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do alive "$pid" || return 0; sleep 0.1; done
    log "$2 (pid $pid) did not exit after SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
}

ns_of_dir() { [ -s "$DIR/ns" ] && cat "$DIR/ns"; }
uri_of_dir() { echo "qemu+unix:///system?socket=$DIR/sock/libvirt-sock"; }

save_cache() { # DIR/cache -> $CACHE (atomic swap, serialised between runs)
    [ -d "$DIR/cache/qemu" ] || return 0
    mkdir -p "$(dirname "$CACHE")"
    (
        flock -w 30 8 || exit 0
        local tmp=$CACHE.new.$$
        rm -rf "$tmp"
        cp -a "$DIR/cache" "$tmp" && rm -rf "$CACHE.old.$$" &&
            { [ ! -e "$CACHE" ] || mv "$CACHE" "$CACHE.old.$$"; } && mv "$tmp" "$CACHE"
        rm -rf "$CACHE.old.$$" "$tmp"
    ) 8>"$(dirname "$CACHE")/.netns-cache.lock"
}

do_start() {
    [ "$(id -u)" -eq 0 ] || { log "must run as root"; return 1; }
    for t in ip unshare nsenter libvirtd virtlogd virsh; do
        command -v "$t" >/dev/null || { log "missing tool: $t (scripts/install-deps.sh)"; return 1; }
    done
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    local URI SOCK NS
    URI=$(uri_of_dir)
    SOCK=$DIR/sock/libvirt-sock
    [ ${#SOCK} -lt 100 ] || { log "socket path too long for AF_UNIX: $SOCK"; return 1; }
    if live_pid "$DIR/libvirtd.pid" libvirtd >/dev/null; then
        log "already running in $DIR (pid $(cat "$DIR/libvirtd.pid"))"
        cat "$DIR/env"
        return 0
    fi
    NS=${CA_NETNS_NAME:-ca-netns-$$}
    [[ $NS =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || { log "bad namespace name '$NS'"; return 1; }
    if ip netns list | awk '{print $1}' | grep -qx -- "$NS"; then
        log "network namespace $NS already exists; not reusing one this script did not make"
        return 1
    fi
    local t0=${EPOCHREALTIME/,/.}

    getent group kvm >/dev/null || groupadd -r kvm
    getent passwd libvirt-qemu >/dev/null ||
        useradd -r -g kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu

    rm -rf "$DIR/sock" "$DIR/run"
    mkdir -p "$DIR"/{sock,run,lib/qemu,log/qemu,cache,etc/qemu}
    if [ -d "$CACHE" ] && [ ! -e "$DIR/cache/qemu" ]; then cp -a "$CACHE/." "$DIR/cache/" || true; fi
    install -m 0644 "$HERE/qemu.conf" "$DIR/etc/qemu.conf"
    { cat "$HERE/libvirtd.conf"
      echo "unix_sock_dir = \"$DIR/sock\""
      echo "host_uuid = \"$(cat /proc/sys/kernel/random/uuid)\""
      echo "log_outputs = \"3:file:$DIR/libvirtd.log\""
    } > "$DIR/libvirtd.conf"
    : > "$DIR/libvirtd.log"
    rm -f "$DIR/libvirtd.pid" "$DIR/virtlogd.pid"

    ip netns add "$NS"
    echo "$NS" > "$DIR/ns"          # from here on, `stop DIR` removes it
    ip -n "$NS" link set lo up

    # Inside: private mounts (no propagation back to the host), own hostname, the daemons.
    ip netns exec "$NS" unshare -m -u --propagation private /bin/sh -euc '
        D=$1
        hostname "$2"
        for p in run:/run/libvirt lib:/var/lib/libvirt log:/var/log/libvirt \
                 cache:/var/cache/libvirt etc:/etc/libvirt; do
            mkdir -p "${p#*:}"
            mount --bind "$D/${p%%:*}" "${p#*:}"
        done
        virtlogd -d -p "$D/virtlogd.pid"
        exec libvirtd -d -f "$D/libvirtd.conf" -p "$D/libvirtd.pid"' sh "$DIR" "$NS"

    local deadline=$((SECONDS + START_DEADLINE))
    until [ -S "$SOCK" ]; do
        if [ $SECONDS -ge $deadline ]; then
            log "socket $SOCK did not appear within ${START_DEADLINE}s (log: $DIR/libvirtd.log)"
            return 1
        fi
        sleep 0.05
    done
    if ! timeout "$VERIFY_TIMEOUT" virsh -c "$URI" version >/dev/null; then
        log "virsh -c $URI version failed (log: $DIR/libvirtd.log)"
        return 1
    fi
    printf "CA_NETNS='%s'\nCA_NETNS_LIBVIRT_URI='%s'\nCA_NETNS_DIR='%s'\n" "$NS" "$URI" "$DIR" > "$DIR/env"
    log "namespace $NS, libvirtd pid $(cat "$DIR/libvirtd.pid"), virtlogd pid $(cat "$DIR/virtlogd.pid"), QEMU driver answers after $(awk -v a="$t0" -v b="${EPOCHREALTIME/,/.}" 'BEGIN{printf "%.2f", b-a}') s"
    cat "$DIR/env"
}

do_stop() {
    [ -d "$DIR" ] || return 0
    DIR=$(cd "$DIR" && pwd)
    local URI NS pid d
    URI=$(uri_of_dir)
    NS=$(ns_of_dir || true)
    if pid=$(live_pid "$DIR/libvirtd.pid" libvirtd); then
        for d in $(timeout 30 virsh -c "$URI" list --name 2>/dev/null); do
            log "destroying domain $d"
            timeout 30 virsh -c "$URI" destroy "$d" >/dev/null 2>&1 || true
        done
        for d in $(timeout 30 virsh -c "$URI" list --all --name 2>/dev/null); do
            timeout 30 virsh -c "$URI" undefine --nvram "$d" >/dev/null 2>&1 ||
                timeout 30 virsh -c "$URI" undefine "$d" >/dev/null 2>&1 || true
        done
        log "stopping libvirtd (pid $pid)"
        stop_pid "$pid" libvirtd
    fi
    if pid=$(live_pid "$DIR/virtlogd.pid" virtlogd); then
        log "stopping virtlogd (pid $pid)"
        stop_pid "$pid" virtlogd
    fi
    rm -f "$DIR/libvirtd.pid" "$DIR/virtlogd.pid"
    if [ -n "$NS" ] && [ -e "/run/netns/$NS" ]; then
        # Whatever still runs in our namespace was started for this env.
        for pid in $(ip netns pids "$NS" 2>/dev/null); do
            log "terminating leftover process $pid ($(cat /proc/$pid/comm 2>/dev/null)) in $NS"
            stop_pid "$pid" "leftover process"
        done
        ip netns del "$NS" || log "ip netns del $NS failed"
    fi
    rm -f "$DIR/ns" "$DIR/env"
    rm -rf "$DIR/sock"
    save_cache || log "saving the capabilities cache failed (ignored)"
}

do_status() {
    local p NS
    [ -d "$DIR" ] && DIR=$(cd "$DIR" && pwd)
    NS=$(ns_of_dir || true)
    if p=$(live_pid "$DIR/libvirtd.pid" libvirtd); then
        echo "namespace: ${NS:-?}; libvirtd: pid $p; virtlogd: pid $(live_pid "$DIR/virtlogd.pid" virtlogd || echo none)"
        if timeout 30 virsh -c "$(uri_of_dir)" version >/dev/null 2>&1; then
            echo "$(uri_of_dir): answering"
            return 0
        fi
        echo "$(uri_of_dir): not answering"
        return 3
    fi
    echo "not running${NS:+ (namespace $NS left)}"
    return 3
}

do_exec() {
    local NS
    NS=$(ns_of_dir) || { log "no env in $DIR"; return 1; }
    exec ip netns exec "$NS" "$@"
}

do_enter() {
    local pid
    pid=$(live_pid "$DIR/libvirtd.pid" libvirtd) || { log "no libvirtd running for $DIR"; return 1; }
    exec nsenter -t "$pid" -n -m -u "$@"
}

case $CMD in
    start) [ $# -eq 0 ] || usage; do_start ;;
    stop) [ $# -eq 0 ] || usage; do_stop ;;
    status) [ $# -eq 0 ] || usage; do_status ;;
    exec) [ $# -ge 1 ] || usage; do_exec "$@" ;;
    enter) [ $# -ge 1 ] || usage; do_enter "$@" ;;
    *) usage ;;
esac
