#!/usr/bin/env bash
# Single-node Apache Kafka broker (KRaft, combined broker+controller, node.id=1) for local
# development and tests, run from the jars fetched by deploy/local/deps.sh.
#   kafka.sh start   format storage on first use, start in the background, wait until ready
#   kafka.sh stop    SIGTERM, then SIGKILL after 30 s
#   kafka.sh status  exit 0 if running
# Config, data, pid and logs live under $PTCE_STATE_DIR/kafka. Topics are not created here.
# Environment:
#   PTCE_STATE_DIR              state folder (default: <repo>/.state)
#   PTCE_CACHE_DIR              cache folder holding kafka/libs (default: <repo>/.cache)
#   PTCE_KAFKA_PORT             client listener on 127.0.0.1 (default: 19092)
#   PTCE_KAFKA_CONTROLLER_PORT  controller listener on 127.0.0.1 (default: 19093)
#   PTCE_KAFKA_JIT_OPTS         the JVM's JIT options (default: none, the JVM's tiered JIT)
#   PTCE_KAFKA_GC_OPTS          the JVM's collector options (default: kafka-run-class.sh's G1 set)
#   JAVA_HOME                   optional; otherwise java from PATH
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE_DIR=$(realpath -m "${PTCE_STATE_DIR:-$ROOT/.state}")
LIBS=$(realpath -m "${PTCE_CACHE_DIR:-$ROOT/.cache}")/kafka/libs
PORT=${PTCE_KAFKA_PORT:-19092}
CONTROLLER_PORT=${PTCE_KAFKA_CONTROLLER_PORT:-19093}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
K_DIR=$STATE_DIR/kafka
PROPS=$K_DIR/server.properties
LOG4J=$K_DIR/log4j.properties
PID_FILE=$K_DIR/kafka.pid
LOG=$K_DIR/logs/server.log
OUT=$K_DIR/logs/stdout.log
START_TIMEOUT=60
STOP_TIMEOUT=30
# The broker's JIT: the JVM's default (tiered, C2 last), for a broker that runs long (make run,
# make bench). Once warm it takes less CPU: after 60 s of 1 000 deposits a second, 13 % of the
# machine against 18-19 % with C1 alone, and deposit -> visible p50 23.0/19.1 against 31.1/26.9
# ms (2 alternating pairs). The C2 compiler's own work comes first: about half the broker's CPU
# for minutes after a start (2.4 of 5.3 CPU-seconds over the first 10 000 deposits), CPU a
# 2-core machine takes from the services. A short-lived stack (make test: tests/run.sh) sets
# PTCE_KAFKA_JIT_OPTS=-XX:TieredStopAtLevel=1, C1 only, whose code is slower but ready at once.
read -ra JIT_OPTS <<<"${PTCE_KAFKA_JIT_OPTS:-}"
# The broker's collector as Kafka's own bin/kafka-run-class.sh sets it: G1 aiming at 20 ms
# pauses (G1's default aim, 200 ms, is four times the deposit's whole latency budget), and
# every pause logged in logs/gc.log, so that a stall can be matched with one. Against G1's
# defaults, in the same deposit bench, it made no difference beyond the noise (4 pauses, 69.5 ms,
# against 7 pauses, 74.4 ms): the broker's collector is not where the deposit's p99 goes.
# PTCE_KAFKA_GC_OPTS replaces the tuning (PTCE_KAFKA_GC_OPTS=-XX:+UseG1GC: G1's defaults).
read -ra GC_OPTS <<<"${PTCE_KAFKA_GC_OPTS--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}"
GC_OPTS+=("-Xlog:gc:file=$K_DIR/logs/gc.log:time,uptime:filecount=2,filesize=10M")
# JVM options shared by the broker and the storage tool.
JVM_BASE=(-Djava.awt.headless=true -Dlog4j.configuration="file:$LOG4J" -Dkafka.logs.dir="$K_DIR/logs"
  -cp "$LIBS/*")

die() { echo "kafka: $*" >&2; exit 1; }

pid() { cat "$PID_FILE" 2>/dev/null || true; }

# Running = the pid file names a live process that is our broker (guards against pid reuse;
# a zombie has an empty cmdline, so it does not count).
running() {
  local p
  p=$(pid)
  [[ -n $p ]] && { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF "kafka.Kafka $PROPS"
}

# A live, non-zombie process: the broker stays a zombie child of "start" if it dies early,
# and right after the fork its cmdline is still this script's, so running() cannot be used.
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ ${st%% *} != Z ]]
}

port_open() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  mkdir -p "$K_DIR/data" "$K_DIR/logs"
  cat >"$PROPS" <<PROPS
# Written by deploy/local/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$K_DIR/data
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Room for the largest event (common/kafka.h KAFKA_TOPIC_MAX_BYTES): a deposit at the 1 MiB
# body limit makes an event over the 1 MB default.
message.max.bytes=8454144
replica.fetch.max.bytes=8454144
# Request threads sized for a 2-core machine and a handful of clients (the defaults are 8 I/O
# and 3 network threads): at 1 000 deposits a second the broker used 18 % less CPU (make bench's
# deposit -> visible load, 4 runs each: 3.6 against 4.4 CPU-seconds).
num.io.threads=2
num.network.threads=1
PROPS
  cat >"$LOG4J" <<'LOG4J'
# Written by deploy/local/kafka.sh: everything to logs/server.log, nothing to the terminal.
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.MaxFileSize=50MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.org.apache.zookeeper=WARN
LOG4J
}

format_storage() {
  [[ -f $K_DIR/data/meta.properties ]] && return
  local tool=("$JAVA" -Xmx256m "${JVM_BASE[@]}" kafka.tools.StorageTool) out
  [[ -s $K_DIR/cluster-id ]] || "${tool[@]}" random-uuid >"$K_DIR/cluster-id"
  out=$("${tool[@]}" format -t "$(cat "$K_DIR/cluster-id")" -c "$PROPS" 2>&1) ||
    { printf '%s\n' "$out" >&2; die "storage format failed"; }
  echo "kafka: formatted storage (cluster id $(cat "$K_DIR/cluster-id"))"
}

fail_start() {
  echo "kafka: $1; last log lines:" >&2
  tail -n 30 "$LOG" "$OUT" >&2 2>/dev/null || true
  stop >/dev/null 2>&1 || true
  exit 1
}

start() {
  if running; then echo "kafka: already running on port $PORT"; return; fi
  compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null || die "no Kafka jars in $LIBS: run deploy/local/deps.sh"
  for p in "$PORT" "$CONTROLLER_PORT"; do
    ! port_open "$p" || die "port $p is already in use by another process"
  done
  write_config
  format_storage
  [[ -f $LOG ]] && mv "$LOG" "$LOG.prev"   # so the readiness check only sees this run
  nohup "$JAVA" -Xms256m -Xmx512m "${GC_OPTS[@]}" "${JIT_OPTS[@]}" "${JVM_BASE[@]}" kafka.Kafka "$PROPS" \
    >"$OUT" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until port_open "$PORT" && grep -q 'Kafka Server started' "$LOG" 2>/dev/null; do
    alive "$(pid)" || fail_start "broker exited during startup"
    ((SECONDS < deadline)) || fail_start "broker not ready after ${START_TIMEOUT}s"
    sleep 0.5
  done
  echo "kafka: running on 127.0.0.1:$PORT (pid $(pid), logs: $K_DIR/logs)"
}

stop() {
  if ! running; then rm -f "$PID_FILE"; echo "kafka: not running"; return; fi
  local p deadline=$((SECONDS + STOP_TIMEOUT))
  p=$(pid)
  kill -TERM "$p"
  while running && ((SECONDS < deadline)); do sleep 0.5; done
  if running; then
    kill -KILL "$p"
    echo "kafka: killed after ${STOP_TIMEOUT}s"
  fi
  rm -f "$PID_FILE"
  echo "kafka: stopped"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) running ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
