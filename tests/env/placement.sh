#!/bin/bash
# tests/env/placement.sh start|stop DIR
#
# Standalone OpenStack Placement (Debian's placement-api) for the tests: noauth2
# (send "X-Auth-Token: admin"), sqlite database DIR/placement.db, listening on
# 127.0.0.1:${PLACEMENT_PORT:-8778}. `start` prints the URL on stdout and writes
# DIR/placement-api.pid; `stop` kills only that pid. Log: DIR/placement-api.log.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
log() { echo "placement.sh: $*" >&2; }
[ $# -eq 2 ] || usage
CMD=$1
DIR=$2
PORT=${PLACEMENT_PORT:-8778}
URL=http://127.0.0.1:$PORT
PIDFILE=$DIR/placement-api.pid
DEADLINE=${CA_PLACEMENT_START_TIMEOUT:-60}

alive() { # pid: running and not a zombie
    [ -r "/proc/$1/stat" ] || return 1
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "${st%% *}" != Z ]
}

# pid from the pid file if that process is alive and is placement-api
our_pid() {
    local pid
    [ -s "$PIDFILE" ] || return 1
    pid=$(tr -dc '0-9' < "$PIDFILE")
    [ -n "$pid" ] && alive "$pid" || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q 'placement-api' || return 1
    echo "$pid"
}

do_start() {
    command -v placement-api >/dev/null && command -v placement-manage >/dev/null || {
        log "placement-api is not installed (scripts/install-deps.sh)"; return 1; }
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    PIDFILE=$DIR/placement-api.pid
    if pid=$(our_pid); then
        log "already running (pid $pid)"
        echo "$URL"
        return 0
    fi
    if curl -s -o /dev/null --max-time 2 "$URL/"; then
        log "something already answers on $URL; set PLACEMENT_PORT to another port"
        return 1
    fi
    cat > "$DIR/placement.conf" <<EOF
[DEFAULT]
debug = False
use_stderr = True
[api]
auth_strategy = noauth2
[placement_database]
connection = sqlite:///$DIR/placement.db
EOF
    placement-manage --config-file "$DIR/placement.conf" db sync > "$DIR/placement-manage.log" 2>&1 || {
        log "db sync failed:"; tail -n 20 "$DIR/placement-manage.log" >&2; return 1; }

    # placement-api (pbr wsgi script) runs a single-threaded wsgiref server in the foreground.
    OS_PLACEMENT_CONFIG_DIR=$DIR placement-api --host 127.0.0.1 --port "$PORT" \
        </dev/null >"$DIR/placement-api.log" 2>&1 &
    local pid=$!
    echo "$pid" > "$PIDFILE"
    local deadline=$((SECONDS + DEADLINE))
    until curl -s -o /dev/null --max-time 2 "$URL/"; do
        if ! alive "$pid"; then
            log "placement-api exited:"; tail -n 20 "$DIR/placement-api.log" >&2
            rm -f "$PIDFILE"; return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            log "placement-api not answering on $URL after ${DEADLINE}s"
            kill "$pid" 2>/dev/null || true
            rm -f "$PIDFILE"; return 1
        fi
        sleep 0.1
    done
    log "placement-api started (pid $pid) on $URL"
    echo "$URL"
}

do_stop() {
    local pid i
    if ! pid=$(our_pid); then
        rm -f "$PIDFILE"
        return 0
    fi
    log "stopping placement-api (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$PIDFILE"
}

case $CMD in
    start) do_start ;;
    stop) do_stop ;;
    *) usage ;;
esac
