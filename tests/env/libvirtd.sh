#!/bin/bash
# tests/env/libvirtd.sh start|stop|status DIR
#
# Runs a private virtlogd + libvirtd (root, no systemd/dbus/polkit) for the tests,
# answering on qemu:///system (/run/libvirt/libvirt-sock).
#
# - If a libvirtd not started by this script already answers on qemu:///system,
#   `start` reuses it (writes DIR/reused) and `stop` does nothing to it.
# - The system's /etc/libvirt is never modified: libvirtd runs in its own mount
#   namespace (unshare -m, slave propagation) where a copy of /etc/libvirt plus
#   tests/env/qemu.conf is bind-mounted over /etc/libvirt. (Persistent domain
#   definitions made by tests land in that copy, not in the system's /etc.)
# - Several test runs may use the same machine at once. The daemons this script
#   starts are shared: their state lives in $STATE (/run/compute-agent-tests/libvirtd),
#   each `start DIR` registers DIR as a user (with the caller's pid), and `stop DIR`
#   unregisters it; only the last live user stops the daemons, and it stops only the
#   pids this script recorded (copies of the pid files are in DIR). Before stopping,
#   guests still running on that private libvirtd are destroyed. A user counts as
#   live while its caller ($PPID of `start`, or CA_LIBVIRTD_USER_PID) is alive.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
URI=qemu:///system
SOCK=/run/libvirt/libvirt-sock
LOGD_SOCK=/run/libvirt/virtlogd-sock
STATE=${CA_LIBVIRTD_STATE:-/run/compute-agent-tests/libvirtd}
START_DEADLINE=${CA_LIBVIRTD_START_TIMEOUT:-30}   # seconds for the socket to appear
VERIFY_TIMEOUT=${CA_LIBVIRTD_VERIFY_TIMEOUT:-90}  # first call probes QEMU (~8 s here)

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
log() { echo "libvirtd.sh: $*" >&2; }

[ $# -eq 2 ] || usage
CMD=$1
DIR=$2
# The process whose lifetime this DIR's use of libvirtd is tied to (default: the caller).
CALLER=${CA_LIBVIRTD_USER_PID:-$PPID}

virsh_ok() { timeout "${1:-20}" virsh -c "$URI" version >/dev/null 2>&1; }

# Does unix socket $1 accept connections? (a real connect: `ss` would also list
# sockets of other mount namespaces)
sock_listening() {
    [ -S "$1" ] || return 1
    python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])' "$1" 2>/dev/null
}

alive() { # pid: running and not a zombie
    [ -r "/proc/$1/stat" ] || return 1
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "${st%% *}" != Z ]
}

# pid from file $1 if it is alive and its comm is $2
live_pid() {
    local f=$1 comm=$2 pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' < "$f")
    [ -n "$pid" ] && alive "$pid" || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
    echo "$pid"
}

stop_pid() { # pidfile comm
    local pid i
    pid=$(live_pid "$1" "$2") || { rm -f "$1"; return 0; }
    log "stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do   # 10 s
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "$2 (pid $pid) did not exit, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

lock() { # serialise start/stop between concurrent test runs
    mkdir -p "$STATE/users"
    exec 9>"$STATE/lock"
    flock -w 300 9 || { log "could not lock $STATE/lock"; exit 1; }
}

user_file() { echo "$STATE/users/$(printf '%s' "$DIR" | md5sum | cut -c1-16)"; }

register() { printf '%s %s\n' "$CALLER" "$DIR" > "$(user_file)"; }

live_users() { # prints the number of registered users whose caller is alive (prunes the others)
    local f pid n=0
    for f in "$STATE"/users/*; do
        [ -f "$f" ] || continue
        read -r pid _ < "$f" || true
        if [ -n "${pid:-}" ] && alive "$pid"; then n=$((n + 1)); else rm -f "$f"; fi
    done
    echo "$n"
}

ours_running() { live_pid "$STATE/libvirtd.pid" libvirtd >/dev/null; }

do_start() {
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    rm -f "$DIR/reused" "$DIR/registered"

    if [ "$(id -u)" -ne 0 ]; then
        if virsh_ok 60; then log "a libvirtd answers on $URI; reusing it"; touch "$DIR/reused"; return 0; fi
        log "must run as root to start libvirtd"
        return 1
    fi
    lock

    if ours_running; then
        if virsh_ok 60; then
            register
            touch "$DIR/registered"
            cp -f "$STATE/libvirtd.pid" "$DIR/libvirtd.pid"
            [ -f "$STATE/virtlogd.pid" ] && cp -f "$STATE/virtlogd.pid" "$DIR/virtlogd.pid"
            log "sharing the libvirtd started by tests/env/libvirtd.sh (pid $(cat "$STATE/libvirtd.pid"), $(live_users) user(s))"
            return 0
        fi
        log "the libvirtd started by this script (pid $(cat "$STATE/libvirtd.pid")) does not answer on $URI"
        return 1
    fi
    if virsh_ok 60; then
        log "a libvirtd already answers on $URI; reusing it"
        touch "$DIR/reused"
        return 0
    fi
    command -v libvirtd >/dev/null && command -v virtlogd >/dev/null || {
        log "libvirtd/virtlogd not installed (scripts/install-deps.sh)"; return 1; }
    if sock_listening "$SOCK"; then
        log "something listens on $SOCK but '$URI' does not answer; not starting a second libvirtd"
        return 1
    fi

    # libvirt's QEMU driver resolves its compiled-in default user/group even with user = "root".
    getent group kvm >/dev/null || groupadd -r kvm
    getent passwd libvirt-qemu >/dev/null || \
        useradd -r -g kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu

    mkdir -p /run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt
    rm -f "$SOCK" "$SOCK-ro" /run/libvirt/libvirt-admin-sock   # stale: nothing listens on them

    # Fresh private /etc/libvirt for libvirtd's mount namespace.
    local etc=$STATE/etc-libvirt
    rm -rf "$etc" "$STATE/users"
    mkdir -p "$etc" "$STATE/users"
    if [ -d /etc/libvirt ]; then cp -a /etc/libvirt/. "$etc/"; fi
    install -m 0644 "$HERE/qemu.conf" "$etc/qemu.conf"
    { cat "$HERE/libvirtd.conf"
      echo "log_outputs = \"3:file:$STATE/libvirtd.log\""
    } > "$STATE/libvirtd.conf"
    : > "$STATE/libvirtd.log"
    rm -f "$STATE/virtlogd.pid" "$STATE/libvirtd.pid"
    register                 # so that `stop DIR` cleans up even after a failed start
    touch "$DIR/registered"

    # virtlogd: reuse a running one (its socket answers), else start ours.
    if sock_listening "$LOGD_SOCK"; then
        log "reusing the running virtlogd ($LOGD_SOCK)"
    else
        rm -f "$LOGD_SOCK" /run/libvirt/virtlogd-admin-sock
        virtlogd -d -p "$STATE/virtlogd.pid" 9>&-   # fd 9 holds the lock
        local i
        for i in $(seq 100); do
            [ -S "$LOGD_SOCK" ] && break
            sleep 0.1
        done
        [ -S "$LOGD_SOCK" ] || { log "virtlogd socket did not appear"; return 1; }
        log "virtlogd started (pid $(cat "$STATE/virtlogd.pid" 2>/dev/null))"
        cp -f "$STATE/virtlogd.pid" "$DIR/virtlogd.pid"
    fi

    mkdir -p /etc/libvirt   # the mount point
    unshare -m --propagation slave /bin/sh -c '
        mount --bind "$1" /etc/libvirt || exit 1
        exec libvirtd -d -f "$2" -p "$3"' sh "$etc" "$STATE/libvirtd.conf" "$STATE/libvirtd.pid" 9>&-
    [ -f "$STATE/libvirtd.pid" ] && cp -f "$STATE/libvirtd.pid" "$DIR/libvirtd.pid"

    local deadline=$((SECONDS + START_DEADLINE))
    until [ -S "$SOCK" ]; do
        if [ $SECONDS -ge $deadline ]; then
            log "libvirtd socket $SOCK did not appear within ${START_DEADLINE}s (log: $STATE/libvirtd.log)"
            return 1
        fi
        sleep 0.1
    done
    log "libvirtd started (pid $(cat "$STATE/libvirtd.pid" 2>/dev/null)); verifying $URI"
    if ! timeout "$VERIFY_TIMEOUT" virsh -c "$URI" version; then
        log "virsh -c $URI version failed (log: $STATE/libvirtd.log)"
        return 1
    fi
}

do_stop() {
    [ -d "$DIR" ] || return 0
    DIR=$(cd "$DIR" && pwd)
    if [ -e "$DIR/reused" ]; then
        log "libvirtd was not started by this script; leaving it alone"
        rm -f "$DIR/reused"
        return 0
    fi
    if [ ! -e "$DIR/registered" ]; then
        # Started by an older version of this script (pids only in DIR): stop those.
        if live_pid "$DIR/libvirtd.pid" libvirtd >/dev/null &&
           [ "$(cat "$DIR/libvirtd.pid")" != "$(cat "$STATE/libvirtd.pid" 2>/dev/null)" ]; then
            stop_pid "$DIR/libvirtd.pid" libvirtd
            stop_pid "$DIR/virtlogd.pid" virtlogd
        fi
        return 0
    fi
    lock
    rm -f "$(user_file)" "$DIR/registered"
    cp -f "$STATE/libvirtd.log" "$DIR/libvirtd.log" 2>/dev/null || true
    local n
    n=$(live_users)
    if [ "$n" -gt 0 ]; then
        log "libvirtd still used by $n other test run(s); leaving it running"
        rm -f "$DIR/libvirtd.pid" "$DIR/virtlogd.pid"
        return 0
    fi
    if ours_running; then
        # Guests left running on our private libvirtd would outlive it: destroy them.
        local d
        for d in $(timeout 30 virsh -c "$URI" list --name 2>/dev/null); do
            log "destroying leftover guest $d"
            timeout 30 virsh -c "$URI" destroy "$d" >/dev/null 2>&1 || true
        done
    fi
    stop_pid "$STATE/libvirtd.pid" libvirtd
    stop_pid "$STATE/virtlogd.pid" virtlogd
    rm -f "$DIR/libvirtd.pid" "$DIR/virtlogd.pid"
    rm -rf "$STATE/etc-libvirt"
}

do_status() {
    local p
    if [ -e "$DIR/reused" ]; then echo "libvirtd: reused (not started by this script)"; fi
    if p=$(live_pid "$STATE/libvirtd.pid" libvirtd); then
        echo "libvirtd: pid $p (started by this script; $(live_users) user(s))"
    else
        echo "libvirtd: none started by this script"
    fi
    if p=$(live_pid "$STATE/virtlogd.pid" virtlogd); then echo "virtlogd: pid $p"; fi
    if virsh_ok 30; then echo "$URI: answering"; return 0; fi
    echo "$URI: not answering"
    return 3
}

case $CMD in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) usage ;;
esac
