#!/usr/bin/env bash
# A real Apache Kafka broker for the tests: one KRaft node (broker and controller in one JVM) on
# 127.0.0.1, with the replication-factor-1 settings that transactions and consumer groups need.
#
#   bash .ci/kafka.sh start     start it (or just report it if it is already up) and run the smoke test
#   bash .ci/kafka.sh restart   stop it if running, then start a fresh one (empty data dir)
#   bash .ci/kafka.sh stop      stop it
#   bash .ci/kafka.sh status    exit 0 if it is running and accepting connections
#   bash .ci/kafka.sh smoke     end-to-end check: admin, 4 partitions, transactions, read_committed
#   bash .ci/kafka.sh env       print `export WEIR_KAFKA_BOOTSTRAP=...` (for eval)
#   bash .ci/kafka.sh topics ARGS...      kafka-topics with --bootstrap-server filled in
#   bash .ci/kafka.sh tool MAINCLASS ARGS...   any Kafka CLI tool, e.g.
#        org.apache.kafka.tools.consumer.ConsoleConsumer, org.apache.kafka.tools.ConsoleProducer,
#        org.apache.kafka.tools.TransactionsCommand, org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
#   bash .ci/kafka.sh log       print the broker's log
#
# Environment (all optional):
#   WEIR_KAFKA_PORT             client listener port (default 19092); the controller uses port+1
#   WEIR_KAFKA_CONTROLLER_PORT  controller listener port (default WEIR_KAFKA_PORT+1)
#   WEIR_KAFKA_DIR              data dir: server.properties, log dirs, kafka.log, kafka.pid
#                               (default ${TMPDIR:-/tmp}/weir-kafka; wiped by every fresh start)
#   WEIR_CI_CACHE               cache outside the clone (default ~/.cache/weir-ci); jars go to
#                               $WEIR_CI_CACHE/kafka/libs, re-copied only when kafka/pom.xml changes
#   WEIR_KAFKA_START_TIMEOUT    seconds to wait for the broker (default 60)
#   WEIR_KAFKA_SMOKE            0 to skip the smoke test in `start`
#   WEIR_KAFKA_JVM_OPTS         JVM options for the broker (default: 512 MiB heap)
#
# The jars come from Maven (see kafka/pom.xml): Maven's local repository keeps them, so only a
# fresh machine downloads them (about 45 MB).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
KDIR=$HERE/kafka
CACHE=${WEIR_CI_CACHE:-$HOME/.cache/weir-ci}
LIBS=$CACHE/kafka/libs
DATA=${WEIR_KAFKA_DIR:-${TMPDIR:-/tmp}/weir-kafka}
HOST=127.0.0.1
PORT=${WEIR_KAFKA_PORT:-19092}
CPORT=${WEIR_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}
BOOTSTRAP=$HOST:$PORT
PIDFILE=$DATA/kafka.pid
LOG=$DATA/kafka.log
START_TIMEOUT=${WEIR_KAFKA_START_TIMEOUT:-60}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
LOG4J=(-Dlog4j2.configurationFile="$KDIR/log4j2.properties")
# Short-lived CLI JVMs: the C1 compiler alone and a small heap start fastest.
TOOL_JVM=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true
    "${LOG4J[@]}" -Dweir.kafka.log.level=WARN)

say() { printf 'kafka: %s\n' "$*"; }
die() { printf 'kafka: error: %s\n' "$*" >&2; exit 1; }

# --- jars --------------------------------------------------------------------------------------

ensure_jars() {
    local stamp want
    want=$(sha256sum "$KDIR/pom.xml" | cut -d' ' -f1)
    stamp=$LIBS/.pom.sha256
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then
        return 0
    fi
    say "copying the Kafka jars into the cache (Maven downloads them on a fresh machine)"
    command -v mvn >/dev/null || die "mvn is not installed"
    local tmp=$LIBS.tmp.$$
    rm -rf "$tmp"
    mkdir -p "$(dirname "$LIBS")"
    local mvnlog=$LIBS.mvn.log
    if ! mvn -B -q -Dstyle.color=never -f "$KDIR/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime </dev/null >"$mvnlog" 2>&1; then
        sed 's/\x1b\[[0-9;]*m//g' "$mvnlog" >&2
        rm -rf "$tmp"
        die "mvn could not fetch the Kafka jars"
    fi
    echo "$want" >"$tmp/.pom.sha256"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    say "$(find "$LIBS" -name '*.jar' | wc -l) jars in the cache"
}

run_tool() { # MAINCLASS ARGS...
    ensure_jars
    "$JAVA" "${TOOL_JVM[@]}" -cp "$LIBS/*" "$@"
}

# --- process state -----------------------------------------------------------------------------

broker_pid() { # prints the pid if our broker process is alive
    [[ -f $PIDFILE ]] || return 1
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must still be a Kafka broker.
    grep -qa 'kafka\.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

port_open() { # PORT
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

is_up() {
    broker_pid >/dev/null && port_open "$PORT" && grep -q 'Kafka Server started' "$LOG" 2>/dev/null
}

show_log_tail() {
    if [[ -f $LOG ]]; then
        echo "---- last 50 lines of the broker log ----" >&2
        tail -n 50 "$LOG" >&2
        echo "----" >&2
    fi
}

# --- commands ----------------------------------------------------------------------------------

write_config() {
    cat >"$DATA/server.properties" <<EOF
# Written by .ci/kafka.sh: a single-node KRaft cluster for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CPORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA/logs

# One broker: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
default.replication.factor=1

# Test-friendly behaviour.
num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
transaction.max.timeout.ms=900000
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000

# Small machine.
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
EOF
}

start() {
    if is_up; then
        say "already running (pid $(broker_pid))"
        echo "Kafka ready on $BOOTSTRAP"
        return 0
    fi
    if broker_pid >/dev/null; then
        say "a broker process is running but not answering; restarting it"
        stop
    fi
    if port_open "$PORT" || port_open "$CPORT"; then
        die "port $PORT or $CPORT on $HOST is taken by another process (not the broker of $DATA); stop it or set WEIR_KAFKA_PORT"
    fi
    command -v "$JAVA" >/dev/null || die "java (17 or newer) is not installed"
    ensure_jars

    local t0 began
    t0=$(date +%s%N)
    began=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
    rm -rf "$DATA"
    mkdir -p "$DATA/logs"
    write_config

    # A random cluster id (a base64url UUID, as `kafka-storage random-uuid` prints).
    local cluster_id
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
    # transaction.version=1: the classic transaction protocol. With version 2 (Kafka 4's
    # default) the broker bumps the producer epoch on every commit, and librdkafka's transactional
    # producer then retries CONCURRENT_TRANSACTIONS on the next transaction for a long time.
    if ! "$JAVA" "${TOOL_JVM[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format \
        --cluster-id "$cluster_id" --config "$DATA/server.properties" \
        --feature transaction.version=1 >"$DATA/format.log" 2>&1; then
        cat "$DATA/format.log" >&2
        die "formatting the storage failed"
    fi

    # shellcheck disable=SC2086 # WEIR_KAFKA_JVM_OPTS is a list of options
    setsid nohup "$JAVA" ${WEIR_KAFKA_JVM_OPTS:--Xms256m -Xmx512m} \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        "${LOG4J[@]}" -Dweir.kafka.log.level=INFO \
        -cp "$LIBS/*" kafka.Kafka "$DATA/server.properties" </dev/null >"$LOG" 2>&1 9>&- &
    local pid=$!
    echo "$pid" >"$PIDFILE"

    local deadline=$((SECONDS + START_TIMEOUT))
    until is_up; do
        # Liveness by pid only: until the background child has exec'd, its command line is
        # still this script's, so broker_pid's check for kafka.Kafka would call it dead.
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log_tail
            rm -f "$PIDFILE"
            die "the broker exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail
            stop || true
            die "the broker was not ready within ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    local ms=$((($(date +%s%N) - t0) / 1000000))
    say "broker up after $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s (pid $(broker_pid), data in $DATA)"

    if [[ ${WEIR_KAFKA_SMOKE:-1} != 0 ]]; then
        if ! smoke; then
            show_log_tail
            die "the broker started but failed the smoke test"
        fi
    fi
    ms=$((($(date +%s%N) - t0) / 1000000))
    echo "Kafka ready on $BOOTSTRAP (started $began, ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s)"
}

stop() {
    local pid
    if ! pid=$(broker_pid); then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    say "stopping the broker (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "still running after 30s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
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
        echo "Kafka running on $BOOTSTRAP (pid $(broker_pid))"
        return 0
    fi
    echo "Kafka not running on $BOOTSTRAP"
    return 1
}

smoke() {
    ensure_jars
    "$JAVA" "${TOOL_JVM[@]}" -cp "$LIBS/*" "$KDIR/Smoke.java" "$BOOTSTRAP"
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
smoke) smoke ;;
env) echo "export WEIR_KAFKA_BOOTSTRAP=$BOOTSTRAP" ;;
topics) run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@" ;;
tool)
    [[ $# -gt 0 ]] || die "usage: $0 tool MAINCLASS [ARGS...]"
    run_tool "$@"
    ;;
log) cat "$LOG" ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
