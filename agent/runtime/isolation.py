"""What every task is denied, as one reviewed table: the OCI runtime writes it into config.json, the Docker
runtime passes the same capability set and namespace choices to dockerd. Change it here or nowhere.

Sources checked: moby `oci/defaults.go` (masked and read-only /proc paths, default mounts),
`oci/caps/defaults.go` (capabilities), `profiles/seccomp/default.json` (syscalls no container needs), and the
Kubernetes Pod Security "restricted" profile (no privilege escalation, no host namespaces, not host root).
"""

from __future__ import annotations

from typing import Final

#: Namespaces a task always gets its own of. "user" maps container root to an unprivileged host range
#: (see IdMap in images.py); "network" gives it a loopback-only network until per-task networking exists.
NAMESPACES: Final = ("pid", "mount", "ipc", "uts", "cgroup", "user", "network")

#: The capabilities dockerd gives a container by default (moby oci/caps/defaults.go). Tasks never get more.
DOCKER_DEFAULT_CAPS: Final = frozenset(
    {
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    }
)  # fmt: skip

#: What a task gets: Docker's defaults minus
#:   NET_RAW     (raw sockets: ARP/ICMP spoofing of neighbours on a bridge),
#:   MKNOD       (device nodes; nothing a task runs needs to make them),
#:   AUDIT_WRITE (writing to the host's kernel audit log),
#:   SETFCAP     (setting file capabilities that a later exec would gain).
#: The rest let ordinary images work as root inside the container: chown/chmod files they own or not
#: (CHOWN, DAC_OVERRIDE, FOWNER, FSETID), drop to another user (SETUID, SETGID, SETPCAP), bind ports
#: below 1024, chroot, and signal their own processes (KILL). Under the OCI runtime these hold only inside
#: the task's user namespace: on the host the task is an unprivileged uid with no capability at all.
TASK_CAPS: Final = (
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
)  # fmt: skip

#: Paths under /proc and /sys that leak host information or offer host controls: bind-mounted over with
#: /dev/null (files) or an empty read-only tmpfs (directories). moby oci/defaults.go, DefaultLinuxSpec.
MASKED_PATHS: Final = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip

#: Paths under /proc that stay visible but read-only (kernel tunables, sysrq, interrupts).
READONLY_PATHS: Final = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip

#: Syscalls refused with EPERM although the rest is allowed (a deny list: Docker's profile is an allow
#: list of ~350 calls; the calls below are the ones it leaves out that a container could otherwise reach,
#: and the user namespace already stops most of them: this is defence in depth). Grouped by why.
SECCOMP_DENIED: Final = (
    # kernel modules, kexec, reboot, swap, clock, accounting: host-wide state
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "acct",
    "syslog", "iopl", "ioperm", "quotactl", "lookup_dcookie", "vhangup",
    # mounting and namespaces: the container's mounts are fixed by the runtime
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount", "fspick",
    "mount_setattr", "unshare", "setns",
    # tracing and cross-process memory access
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "perf_event_open",
    # kernel attack surface Docker also closes
    "bpf", "userfaultfd", "keyctl", "add_key", "request_key", "open_by_handle_at", "name_to_handle_at",
)  # fmt: skip

#: Resource limits per process (soft, hard); open files are inherited from the agent (a user namespace
#: cannot raise them), the pids cgroup limits the count of processes.
RLIMITS: Final = (("RLIMIT_CORE", 0, 0),)  # no core dumps of task memory onto the host

#: Mode of every directory the agent or master keeps state in, and of their secret files.
PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600
