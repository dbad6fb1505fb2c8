/* A hostile container's tools (issue 19), built static by the tests with `cc -static`:
 *   probe tiocsti TEXT [HIGH]  push TEXT ("\n" = newline) into the terminal on fd 0 with
 *                              ioctl(TIOCSTI), the request OR-ed with HIGH << 32 (hex) when given;
 *                              prints "TIOCSTI ok" or "TIOCSTI errno=N"
 *   probe tioclinux            ioctl(0, TIOCLINUX, subcode 6): prints "TIOCLINUX errno=N" or "ok"
 *   probe bindabs NAME SECS    bind the abstract unix socket @NAME, print "BOUND", hold it SECS
 *   probe connectabs NAME      connect a stream socket to @NAME: "CONNECTED" or "connect errno=N"
 *   probe ptrace PID           PTRACE_SEIZE PID (and detach): "SEIZED" or "ptrace errno=N"
 *   probe whoami               print "euid=N" and whether /etc/shadow opens ("shadow=yes|no")
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static socklen_t abstract_address(struct sockaddr_un* sa, const char* name) {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    size_t n = strlen(name);
    if (n + 1 > sizeof sa->sun_path) return 0;
    memcpy(sa->sun_path + 1, name, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static int tiocsti(const char* text, unsigned long high) {
    unsigned long req = (high << 32) | TIOCSTI;
    for (const char* p = text; *p; p++) {
        char c = *p;
        if (p[0] == '\\' && p[1] == 'n') {
            c = '\n';
            p++;
        }
        /* raw syscall: glibc's ioctl() takes the request as unsigned long too, but be explicit */
        if (syscall(SYS_ioctl, 0, req, &c) < 0) {
            printf("TIOCSTI errno=%d\n", errno);
            return 1;
        }
    }
    printf("TIOCSTI ok\n");
    return 0;
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc >= 3 && strcmp(argv[1], "tiocsti") == 0)
        return tiocsti(argv[2], argc >= 4 ? strtoul(argv[3], NULL, 16) : 0);
    if (argc >= 2 && strcmp(argv[1], "tioclinux") == 0) {
        char sub = 6; /* TIOCL_GETSHIFTSTATE: harmless */
        if (ioctl(0, TIOCLINUX, &sub) < 0) {
            printf("TIOCLINUX errno=%d\n", errno);
            return 1;
        }
        printf("TIOCLINUX ok\n");
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "bindabs") == 0) {
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa;
        socklen_t len = abstract_address(&sa, argv[2]);
        if (fd < 0 || len == 0) return 2;
        if (bind(fd, (struct sockaddr*)&sa, len) < 0) {
            printf("bind errno=%d\n", errno);
            return 1;
        }
        printf("BOUND\n");
        sleep((unsigned)atoi(argv[3]));
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "connectabs") == 0) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa;
        socklen_t len = abstract_address(&sa, argv[2]);
        if (fd < 0 || len == 0) return 2;
        if (connect(fd, (struct sockaddr*)&sa, len) < 0) {
            printf("connect errno=%d\n", errno);
            return 1;
        }
        printf("CONNECTED\n");
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "ptrace") == 0) {
        pid_t pid = (pid_t)atoi(argv[2]);
        if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) < 0) {
            printf("ptrace errno=%d\n", errno);
            return 1;
        }
        printf("SEIZED\n");
        ptrace(PTRACE_DETACH, pid, NULL, NULL);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "whoami") == 0) {
        int fd = open("/etc/shadow", O_RDONLY | O_CLOEXEC);
        printf("euid=%u shadow=%s\n", (unsigned)geteuid(), fd >= 0 ? "yes" : "no");
        return 0;
    }
    fprintf(stderr, "usage: probe tiocsti TEXT [HIGH] | tioclinux | bindabs NAME SECS | connectabs NAME | ptrace PID | "
                    "whoami\n");
    return 2;
}
