#!/usr/bin/env bash
# Install, start and stop dockerd on a host where systemd does not manage it (CI machines, dev VMs).
#
#   scripts/services/dockerd.sh install   # apt-get install docker.io (dockerd, containerd, runc, iptables)
#   scripts/services/dockerd.sh start     # start dockerd in the background, wait until `docker info` answers
#   scripts/services/dockerd.sh stop      # stop the dockerd this script started (leaves others alone)
#   scripts/services/dockerd.sh status    # exit 0 if the daemon answers
#   scripts/services/dockerd.sh cgroups   # mount any cgroup v1 hierarchy the kernel has but this host lacks (start does)
#
# dockerd listens only on its unix socket (no TCP), the default /var/run/docker.sock, so the Docker SDK's
# from_env() and any docker CLI (Debian's 20.10 or a newer one already on PATH) find it without settings.
# Environment:
#   TITUS_DOCKER_DATA_ROOT  image/container storage   (default /var/lib/docker)
#   TITUS_DOCKER_STATE_DIR  pid file and log           (default /var/run/titus-dockerd)
#   TITUS_DOCKER_CGROUP_DRIVER  cgroupfs or systemd    (default cgroupfs: no systemd runs here)
#   TITUS_DOCKER_START_TIMEOUT  seconds to wait        (default 60)
set -euo pipefail

DATA_ROOT="${TITUS_DOCKER_DATA_ROOT:-/var/lib/docker}"
STATE_DIR="${TITUS_DOCKER_STATE_DIR:-/var/run/titus-dockerd}"
CGROUP_DRIVER="${TITUS_DOCKER_CGROUP_DRIVER:-cgroupfs}"
START_TIMEOUT="${TITUS_DOCKER_START_TIMEOUT:-60}"
SOCKET=/var/run/docker.sock
PID_FILE="$STATE_DIR/dockerd.pid"
LOG_FILE="$STATE_DIR/dockerd.log"

die() { echo "dockerd.sh: $*" >&2; exit 1; }

# Any docker client will do for the readiness probe: a newer client negotiates the API version down.
docker_cli() {
  if command -v docker >/dev/null 2>&1; then echo docker
  elif [ -x /usr/bin/docker ]; then echo /usr/bin/docker
  else die "no docker client found; run: $0 install"
  fi
}

daemon_answers() {
  "$(docker_cli)" -H "unix://$SOCKET" info >/dev/null 2>&1
}

install() {
  if command -v dockerd >/dev/null 2>&1 && command -v containerd >/dev/null 2>&1 \
      && command -v runc >/dev/null 2>&1 && command -v iptables >/dev/null 2>&1; then
    echo "dockerd.sh: docker.io already installed ($(dockerd --version))"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  # docker.io brings dockerd, containerd, runc, tini (docker-init) and iptables (bridge network NAT).
  # Its postinst may try to start the service; where policy-rc.d forbids it, that is expected and harmless.
  apt-get install -y --no-install-recommends docker.io iptables ca-certificates \
    || { apt-get update && apt-get install -y --no-install-recommends docker.io iptables ca-certificates; }
  echo "dockerd.sh: installed $(dockerd --version)"
}

# containerd reads a container's stats from every cgroup v1 hierarchy the kernel lists in /proc/self/cgroup,
# and answers with empty stats ("cannot find cgroup mount destination") when one of them is mounted only in
# another mount namespace: a nested container that mounts a controller nobody had mounted (hugetlb,
# perf_event, net_cls,net_prio) creates that hierarchy for the whole kernel. A host mounts every controller it
# has, as systemd does; this does the same for the ones missing here, so stats never silently go empty.
mount_missing_hierarchies() {
  [ -f /sys/fs/cgroup/cgroup.controllers ] && return 0   # cgroup v2: one hierarchy, nothing to add
  local id controllers rest missing=()
  while IFS=: read -r id controllers rest; do
    [ "$id" = 0 ] || [ -z "$controllers" ] && continue
    case "$controllers" in name=*) continue ;; esac
    awk -v want="${controllers%%,*}" '
      { for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i+1) != "cgroup") next; n = split($(i+3), o, ",");
          for (j = 1; j <= n; j++) if (o[j] == want) found = 1; next } }
      END { exit found ? 0 : 1 }' /proc/self/mountinfo || missing+=("$controllers")
  done </proc/self/cgroup
  [ ${#missing[@]} -gt 0 ] || return 0
  local remounted=0
  if ! touch /sys/fs/cgroup/.titus-probe 2>/dev/null; then
    mount -o remount,rw /sys/fs/cgroup && remounted=1
  else
    rm -f /sys/fs/cgroup/.titus-probe
  fi
  for controllers in "${missing[@]}"; do
    mkdir -p "/sys/fs/cgroup/$controllers"
    mount -t cgroup -o "$controllers" cgroup "/sys/fs/cgroup/$controllers"
    echo "dockerd.sh: mounted the cgroup v1 hierarchy $controllers at /sys/fs/cgroup/$controllers"
  done
  [ "$remounted" = 0 ] || mount -o remount,ro /sys/fs/cgroup
}

start() {
  command -v dockerd >/dev/null 2>&1 || die "dockerd not installed; run: $0 install"
  mount_missing_hierarchies
  if daemon_answers; then
    echo "dockerd.sh: dockerd already answers on $SOCKET"
    return
  fi
  mkdir -p "$STATE_DIR" "$DATA_ROOT"
  if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    echo "dockerd.sh: dockerd (pid $(cat "$PID_FILE")) is starting; waiting"
  else
    # A dockerd killed hard leaves its pid file and socket behind; dockerd refuses to start over a live pid.
    rm -f "$SOCKET" /var/run/docker.pid
    # setsid: the daemon must outlive the shell that started it and not receive its terminal's signals.
    setsid dockerd \
      --host "unix://$SOCKET" \
      --data-root "$DATA_ROOT" \
      --exec-opt "native.cgroupdriver=$CGROUP_DRIVER" \
      --log-level warn \
      </dev/null >>"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
  fi
  local deadline=$((SECONDS + START_TIMEOUT))
  until daemon_answers; do
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      tail -n 30 "$LOG_FILE" >&2 || true
      die "dockerd exited during start-up (log: $LOG_FILE)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$LOG_FILE" >&2 || true
      die "dockerd did not answer within ${START_TIMEOUT}s (log: $LOG_FILE)"
    fi
    sleep 0.2
  done
  echo "dockerd.sh: dockerd pid $(cat "$PID_FILE") answers on $SOCKET" \
       "($("$(docker_cli)" info --format '{{.CgroupDriver}} cgroup v{{.CgroupVersion}}, {{.Driver}}' 2>/dev/null))"
}

stop() {
  if [ ! -f "$PID_FILE" ]; then
    echo "dockerd.sh: no dockerd started by this script"
    return
  fi
  local pid
  pid="$(cat "$PID_FILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    # dockerd stops its containers (10 s grace each, in parallel) and its managed containerd before exiting.
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "dockerd.sh: dockerd $pid did not stop in 60s; killing" >&2
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  fi
  rm -f "$PID_FILE"
  echo "dockerd.sh: stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) daemon_answers ;;
  cgroups) mount_missing_hierarchies ;;
  *) die "usage: $0 install|start|stop|status|cgroups" ;;
esac
