/* Attacks a task tries on its host, for tests/security: each prints "REFUSED <errno name>" and exits 0 when
 * the kernel refuses it, or prints "SUCCEEDED" and exits 99 when it worked (the test then fails).
 * Built static by tests/security/conftest.py so one binary runs on the host and in any image. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int verdict(int rc, const char *what) {
    if (rc == 0) { printf("SUCCEEDED %s\n", what); return 99; }
    printf("REFUSED %s %s\n", what, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: attack ptrace|rawsock|module|mount|euid [pid]\n"); return 2; }
    const char *a = argv[1];
    if (!strcmp(a, "ptrace")) {
        pid_t pid = argc > 2 ? atoi(argv[2]) : 0;
        if (pid == 0) {  /* our own child: only the seccomp profile can stop this one */
            pid = fork();
            if (pid == 0) { pause(); _exit(0); }
        }
        int rc = ptrace(PTRACE_ATTACH, pid, 0, 0) == -1 ? -1 : 0;
        int r = verdict(rc, "ptrace");
        if (argc <= 2) kill(pid, SIGKILL);
        return r;
    }
    if (!strcmp(a, "rawsock")) {
        int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
        return verdict(fd >= 0 ? 0 : -1, "rawsock");
    }
    if (!strcmp(a, "module")) {
        /* A zero-length module: with CAP_SYS_MODULE the kernel answers ENOEXEC/EINVAL, without it EPERM;
         * a kernel built without module support answers ENOSYS to everyone (nothing to load into). */
        long rc = syscall(SYS_init_module, "", 0UL, "");
        if (rc != 0 && errno != EPERM && errno != ENOSYS) { printf("SUCCEEDED module (reached the loader: %s)\n", strerrorname_np(errno)); return 99; }
        return verdict((int)rc, "module");
    }
    if (!strcmp(a, "mount")) {
        mkdir("/tmp/titus-attack-mnt", 0700);
        return verdict(mount("none", "/tmp/titus-attack-mnt", "tmpfs", 0, ""), "mount");
    }
    if (!strcmp(a, "euid")) {  /* run through a setuid-root copy: no_new_privs keeps euid */
        printf("EUID %d\n", (int)geteuid());
        return 0;
    }
    fprintf(stderr, "unknown attack %s\n", a);
    return 2;
}
