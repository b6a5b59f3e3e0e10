# shellcheck shell=bash
# Helpers shared by zookeeper.sh and cassandra.sh. Sourced, not executed.
#
# Both scripts run test servers as plain background processes tracked by a pid file (no systemd: CI and
# developer machines may not run it, and tests need several instances on ports of their choosing).

TITUS_TEST_BASE="${TITUS_TEST_BASE:-/var/lib/titus-test}"

log() { printf '%s: %s\n' "${SCRIPT_NAME}" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "${SCRIPT_NAME}" "$*" >&2; exit 1; }

# Installs Debian packages, waiting for the dpkg lock rather than failing: on a shared machine another
# apt-get may be running, and CI must not fail on that race.
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        die "need root to apt-get install $*; run as root or install them first"
    fi
    export DEBIAN_FRONTEND=noninteractive
    local lock_opt=(-o DPkg::Lock::Timeout=600)
    if ! apt-get "${lock_opt[@]}" install -y --no-install-recommends "$@"; then
        apt-get "${lock_opt[@]}" update -q || die "apt-get update failed"
        apt-get "${lock_opt[@]}" install -y --no-install-recommends "$@" || die "apt-get install $* failed"
    fi
}

# Reads a pid file and prints the pid if that process is alive and its command line contains $PID_MARKER
# (set by each script to something unique to its instance). The marker check keeps a stale pid file whose
# pid the kernel has since reused from making us wait on, or kill, an unrelated process.
live_pid() {
    local pidfile="$1" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF -- "${PID_MARKER:?}" || return 1
    printf '%s\n' "$pid"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null && exec 3<&- 3>&-
}

# Stops the process in a pid file: SIGTERM, wait up to $2 seconds, then SIGKILL. Returns once it is gone so
# that a following start can bind the same ports.
stop_pidfile() {
    local pidfile="$1" timeout="${2:-30}" pid i
    if ! pid="$(live_pid "$pidfile")"; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    log "pid $pid did not exit ${timeout}s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$pidfile"
}

# Prints the last lines of a log, so that a failed start explains itself in CI output.
show_log_tail() {
    local file="$1" lines="${2:-40}"
    if [ -f "$file" ]; then
        printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
        tail -n "$lines" "$file" >&2
        printf -- '-----\n' >&2
    fi
}

java17() {
    local candidate
    for candidate in "${JAVA_HOME:-}/bin/java" /usr/lib/jvm/java-17-openjdk-amd64/bin/java \
        /usr/lib/jvm/java-17-openjdk-arm64/bin/java; do
        if [ -x "$candidate" ] && "$candidate" -version 2>&1 | grep -q 'version "17'; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}
