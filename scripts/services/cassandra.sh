#!/usr/bin/env bash
# Installs and runs a single-node Apache Cassandra 5.0 on 127.0.0.1 for tests.
#
# Usage: cassandra.sh install | start | run | stop | status | clean
#
#   install  apt-get installs Java 17 and Maven when missing, then fetches org.apache.cassandra:cassandra-all
#            and its runtime dependencies from Maven Central (scripts/services/cassandra/pom.xml) into
#            $CASSANDRA_INSTALL_DIR/lib. Skipped when those jars are already complete.
#   start    generates the config, starts CassandraDaemon in the background and returns only when a CQL
#            query succeeds (no-op when the node already answers).
#   run      the same server in the foreground (for a developer's terminal; Ctrl-C stops it).
#   stop     SIGTERM, then SIGKILL after $CASSANDRA_STOP_TIMEOUT seconds.
#   status   exit 0 when the node answers CQL, 3 otherwise.
#   clean    stop and delete the data (keyspaces, commit log); the jars stay.
#
# Environment (defaults in brackets):
#   TITUS_TEST_BASE [/var/lib/titus-test]   CASSANDRA_DIR [$TITUS_TEST_BASE/cassandra]: conf, data, logs, pid
#   CASSANDRA_INSTALL_DIR [/opt/titus-test/cassandra-<version>]   MAVEN_REPO_LOCAL [Maven's default, ~/.m2]
#   CASSANDRA_NATIVE_PORT [9042]  CASSANDRA_STORAGE_PORT [7000]  CASSANDRA_HEAP_MIN [512m]  CASSANDRA_HEAP_MAX [1g]
#   CASSANDRA_START_TIMEOUT [180] CASSANDRA_STOP_TIMEOUT [30]  PYTHON [python3] (needs cassandra-driver)
#   CASSANDRA_JVM_OPTS: extra JVM options, split on spaces (e.g. "-Dcassandra.jmx.local.port=7199")
#   CASSANDRA_JIT_OPTS [-XX:TieredStopAtLevel=1]: JIT choice, see below; "" for the JVM default
set -euo pipefail

SCRIPT_NAME="cassandra.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/services/common.sh
source "${HERE}/common.sh"

POM="${HERE}/cassandra/pom.xml"
VERSION="$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$POM")"
[ -n "$VERSION" ] || die "cannot read cassandra.version from $POM"
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

install_dir="${CASSANDRA_INSTALL_DIR:-/opt/titus-test/cassandra-${VERSION}}"
lib_dir="${install_dir}/lib"
stamp="${lib_dir}/.complete"
node_dir="${CASSANDRA_DIR:-${TITUS_TEST_BASE}/cassandra}"
conf_dir="${node_dir}/conf"
data_dir="${node_dir}/data"
log_dir="${node_dir}/logs"
pidfile="${node_dir}/cassandra.pid"
outfile="${log_dir}/stdout.log"
PID_MARKER="-Dcassandra.config=file://${conf_dir}/cassandra.yaml"
native_port="${CASSANDRA_NATIVE_PORT:-9042}"
storage_port="${CASSANDRA_STORAGE_PORT:-7000}"
heap_min="${CASSANDRA_HEAP_MIN:-512m}"
heap_max="${CASSANDRA_HEAP_MAX:-1g}"
start_timeout="${CASSANDRA_START_TIMEOUT:-180}"
stop_timeout="${CASSANDRA_STOP_TIMEOUT:-30}"
python="${PYTHON:-python3}"
# C1 only: measured on the 2-core test machine, it halves start-up CPU (7 vs 15 CPU-seconds) and a node that
# lives for one test run serves LWTs faster without C2 compiling in the background (about 550 vs 250
# conditional inserts/s in the first minute). Set CASSANDRA_JIT_OPTS="" for the JVM's default tiered JIT.
jit_opts="${CASSANDRA_JIT_OPTS--XX:TieredStopAtLevel=1}"

do_install() {
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$VERSION" ] && java17 >/dev/null; then
        log "Cassandra ${VERSION} already installed in ${lib_dir} ($(find "$lib_dir" -name '*.jar' | wc -l) jars)"
        return 0
    fi
    local missing=()
    java17 >/dev/null || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    local java_home
    java_home="$(dirname "$(dirname "$(java17)")")"
    local repo_opt=()
    [ -n "${MAVEN_REPO_LOCAL:-}" ] && repo_opt=("-Dmaven.repo.local=${MAVEN_REPO_LOCAL}")
    log "fetching org.apache.cassandra:cassandra-all:${VERSION} and dependencies into ${lib_dir}"
    rm -rf "${lib_dir}.partial"
    mkdir -p "${lib_dir}.partial"
    # Runtime scope only: the test-scoped jars of cassandra-all are not needed to run the server.
    if ! JAVA_HOME="$java_home" mvn -B -q -Dstyle.color=never -f "$POM" "${repo_opt[@]}" \
        "${DEPENDENCY_PLUGIN}:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="${lib_dir}.partial"; then
        rm -rf "${lib_dir}.partial"
        die "mvn dependency:copy-dependencies failed for cassandra-all ${VERSION} (see Maven output above)"
    fi
    [ -f "${lib_dir}.partial/cassandra-all-${VERSION}.jar" ] || die "cassandra-all-${VERSION}.jar was not fetched"
    # Build aside, then swap in: a fetch interrupted half-way must not look installed next time.
    rm -rf "$lib_dir"
    mv "${lib_dir}.partial" "$lib_dir"
    echo "$VERSION" >"$stamp"
    log "installed Cassandra ${VERSION}: $(find "$lib_dir" -name '*.jar' | wc -l) jars, $(du -sh "$lib_dir" | cut -f1)"
}

write_config() {
    mkdir -p "$conf_dir" "$data_dir" "$log_dir"
    # Tuned for one node in tests: one token, no bootstrap, no snapshots on DROP/TRUNCATE, no hints,
    # small commit-log segments, few threads. storage_compatibility_mode NONE because this cluster never
    # had a 4.x node, so 5.0 may use its own sstable and messaging formats from the start.
    cat >"${conf_dir}/cassandra.yaml" <<EOF
# Generated by scripts/services/cassandra.sh; rewritten on every start.
cluster_name: titus-test
num_tokens: 1
initial_token: 0
auto_bootstrap: false
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:${storage_port}"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: ${storage_port}
native_transport_port: ${native_port}
start_native_transport: true
data_file_directories:
  - ${data_dir}/data
commitlog_directory: ${data_dir}/commitlog
saved_caches_directory: ${data_dir}/saved_caches
hints_directory: ${data_dir}/hints
cdc_raw_directory: ${data_dir}/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
network_authorizer: AllowAllNetworkAuthorizer
hinted_handoff_enabled: false
auto_snapshot: false
snapshot_before_compaction: false
incremental_backups: false
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 4
concurrent_compactors: 1
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 16MiB
file_cache_size: 64MiB
storage_compatibility_mode: NONE
paxos_variant: v2
EOF
    cat >"${conf_dir}/logback.xml" <<EOF
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${log_dir}/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
EOF
}

# Builds the java command line. The --add-exports/--add-opens set is what Cassandra 5.0 declares for
# Java 17 in its conf/jvm17-server.options; jamm (the memory meter behind memtable accounting) runs as a
# java agent as cassandra-env.sh does.
java_command() {
    local java jamm
    java="$(java17)" || die "Java 17 not found; run: $0 install"
    jamm="$(find "$lib_dir" -maxdepth 1 -name 'jamm-*.jar' | head -n 1)"
    [ -n "$jamm" ] || die "jamm jar missing from ${lib_dir}; run: $0 install"
    local extra_opts=()
    read -r -a extra_opts <<<"${jit_opts} ${CASSANDRA_JVM_OPTS:-}"
    cmdline=(
        "$java"
        "-Xms${heap_min}" "-Xmx${heap_max}" -Xss256k
        -XX:+UseG1GC -XX:MaxGCPauseMillis=300 -XX:+ParallelRefProcEnabled
        -XX:+UseTLAB -XX:+ResizeTLAB -XX:+PerfDisableSharedMem -XX:+HeapDumpOnOutOfMemoryError
        -XX:+ExitOnOutOfMemoryError
        "-XX:HeapDumpPath=${log_dir}"
        -Djava.net.preferIPv4Stack=true
        -Djdk.attach.allowAttachSelf=true
        --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
        --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
        --add-exports java.sql/java.sql=ALL-UNNAMED
        --add-exports java.base/java.lang.ref=ALL-UNNAMED
        --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
        --add-opens java.base/java.lang.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
        --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
        --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
        --add-opens java.base/jdk.internal.math=ALL-UNNAMED
        --add-opens java.base/jdk.internal.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
        --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
        --add-opens java.base/sun.nio.ch=ALL-UNNAMED
        --add-opens java.base/java.io=ALL-UNNAMED
        --add-opens java.base/java.lang.reflect=ALL-UNNAMED
        --add-opens java.base/java.lang=ALL-UNNAMED
        --add-opens java.base/java.util=ALL-UNNAMED
        -Dio.netty.tryReflectionSetAccessible=true
        -Dio.netty.allocator.useCacheForAllThreads=true
        -Dio.netty.allocator.maxOrder=11
        "-javaagent:${jamm}"
        "-Dcassandra.config=file://${conf_dir}/cassandra.yaml"
        "-Dlogback.configurationFile=${conf_dir}/logback.xml"
        "-Dcassandra.logdir=${log_dir}"
        "-Dcassandra.storagedir=${data_dir}"
        -Dcassandra-foreground=yes
        # Single node: nothing to gossip with, so do not wait for gossip to settle or for a ring delay.
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        -Dcassandra.ring_delay_ms=100
        # Skip fsync of system-keyspace flushes: test data is disposable and startup is dominated by them.
        -Dcassandra.unsafesystem=true
        "${extra_opts[@]}"
        -cp "${lib_dir}/*"
        org.apache.cassandra.service.CassandraDaemon
    )
}

# CPU time a process has used so far: start-up cost independent of how busy the machine is.
cpu_seconds() {
    local fields
    read -r -a fields <"/proc/$1/stat" 2>/dev/null || { echo "?"; return; }
    # Fields 14 and 15 (utime, stime) counted after the ")" that ends the command name; comm has no spaces here.
    echo $(( (fields[13] + fields[14]) / $(getconf CLK_TCK) ))
}

cql_answers() {
    "$python" "${HERE}/cassandra/cql_ready.py" --host 127.0.0.1 --port "$native_port" --timeout "${1:-0}"
}

check_ready_to_start() {
    [ -f "$stamp" ] || die "Cassandra ${VERSION} is not installed in ${lib_dir}; run: $0 install"
    "$python" -c 'import cassandra' 2>/dev/null \
        || die "$python cannot import cassandra (pip install cassandra-driver): needed to check CQL readiness"
    local port
    for port in "$native_port" "$storage_port"; do
        if port_open "$port"; then
            die "127.0.0.1:${port} is already in use by a process this script did not start (no live pid in $pidfile)"
        fi
    done
}

do_start() {
    local pid i version
    if pid="$(live_pid "$pidfile")"; then
        if version="$(cql_answers 0 2>/dev/null)"; then
            log "already running on 127.0.0.1:${native_port} (pid $pid, Cassandra ${version})"
            return 0
        fi
        log "pid $pid is alive but does not answer CQL; waiting for it (it may still be starting)"
    else
        check_ready_to_start
        write_config
        java_command
        : >"$outfile"
        local started_at=$SECONDS
        # setsid: the node must outlive the shell or pytest process that started it and not get its signals.
        setsid "${cmdline[@]}" </dev/null >>"$outfile" 2>&1 &
        pid=$!
        echo "$pid" >"$pidfile"
        log "started CassandraDaemon (pid $pid), waiting for CQL on 127.0.0.1:${native_port}"
    fi
    # The native port opens last in startup; poll it cheaply, then prove CQL with a query.
    for ((i = 0; i < start_timeout * 5; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log_tail "$outfile" 20
            show_log_tail "${log_dir}/system.log" 40
            rm -f "$pidfile"
            die "Cassandra exited during startup; logs: ${log_dir}"
        fi
        port_open "$native_port" && break
        sleep 0.2
    done
    if version="$(cql_answers 30)"; then
        log "Cassandra ${version} answers CQL on 127.0.0.1:${native_port} (pid $pid) after" \
            "$((SECONDS - ${started_at:-$SECONDS}))s, $(cpu_seconds "$pid") CPU-seconds"
        return 0
    fi
    show_log_tail "$outfile" 20
    show_log_tail "${log_dir}/system.log" 40
    stop_pidfile "$pidfile" "$stop_timeout"
    die "Cassandra did not answer CQL on 127.0.0.1:${native_port} within ${start_timeout}s; logs: ${log_dir}"
}

do_run() {
    if live_pid "$pidfile" >/dev/null; then
        die "already running in the background (pid $(cat "$pidfile")); run: $0 stop"
    fi
    check_ready_to_start
    write_config
    java_command
    echo $$ >"$pidfile"
    log "running in the foreground (pid $$); logs: ${log_dir}/system.log"
    exec "${cmdline[@]}"
}

do_stop() {
    if live_pid "$pidfile" >/dev/null; then
        stop_pidfile "$pidfile" "$stop_timeout"
        log "stopped Cassandra"
    else
        rm -f "$pidfile"
        log "Cassandra was not running"
    fi
}

do_status() {
    local pid version
    if pid="$(live_pid "$pidfile")" && version="$(cql_answers 0 2>/dev/null)"; then
        echo "cassandra ${version} 127.0.0.1:${native_port} running (pid $pid, dir ${node_dir})"
        return 0
    fi
    echo "cassandra 127.0.0.1:${native_port} not running"
    return 3
}

do_clean() {
    do_stop
    rm -rf "${data_dir:?}" "${log_dir:?}"
    log "removed ${data_dir} and ${log_dir}"
}

case "${1:-}" in
    install) do_install ;;
    start) do_start ;;
    run) do_run ;;
    stop) do_stop ;;
    status) do_status ;;
    clean) do_clean ;;
    *)
        echo "usage: $0 install | start | run | stop | status | clean" >&2
        exit 2
        ;;
esac
