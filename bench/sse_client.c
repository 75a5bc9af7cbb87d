/* The load client of bench/fanout_bench.py: many SSE readers on one epoll loop, in one thread.
 *
 *   sse_client HOST PORT PATH CONNECTIONS EXPECTED_EVENTS SECONDS
 *
 * Opens CONNECTIONS readers of PATH, prints "READY <n>" once every reader has its response headers,
 * then counts events until EXPECTED_EVENTS arrived in all (0: just hold the connections) or
 * SECONDS passed. An event's data starts "T<epoch ms>|": its publish time, for latency. Prints one
 * JSON line: connected, events, closed, latency percentiles (ms), first/last receive, CPU seconds.
 *
 * Two latencies per event: to the moment this loop read it (p50_ms/p99_ms), and to the moment the
 * kernel queued it on the client socket (arrive_p50_ms/arrive_p99_ms, from SO_TIMESTAMPNS). The second
 * leaves out the time this one thread needs to walk its sockets, so it is the server's share.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384
#define MAX_LAT 4000000

typedef struct {
    int fd;
    int ready;      /* headers seen */
    int open;
    size_t len;
    char buf[BUF];
} conn_t;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT PATH CONNECTIONS EXPECTED_EVENTS SECONDS\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]), n = atoi(argv[4]);
    long expected = atol(argv[5]);
    double seconds = atof(argv[6]);

    struct rlimit rl = {n + 64, n + 64};
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)n + 64 ? rl.rlim_max : (rlim_t)n + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    char request[512];
    int reqlen = snprintf(request, sizeof request,
                          "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n\r\n", path, host, port);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);

    int ep = epoll_create1(0);
    conn_t *conns = calloc(n, sizeof(conn_t));
    double *lat = malloc(sizeof(double) * MAX_LAT), *arr = malloc(sizeof(double) * MAX_LAT);
    long events = 0, nlat = 0;
    int ready = 0, closed = 0, errors = 0, announced = 0;
    double first = 0, last = 0, start = now_ms();

    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            errors++;
            if (fd >= 0) close(fd);
            conns[i].fd = -1;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        if (write(fd, request, reqlen) != reqlen) errors++;
        fcntl(fd, F_SETFL, O_NONBLOCK);
        conns[i].fd = fd;
        conns[i].open = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }

    struct epoll_event evs[1024];
    while (1) {
        double t = now_ms();
        if (t - start > seconds * 1000) break;
        if (expected > 0 && events >= expected) break;
        if (expected <= 0 && announced && closed + errors >= n) break;
        int k = epoll_wait(ep, evs, 1024, 100);
        for (int e = 0; e < k; e++) {
            conn_t *c = &conns[evs[e].data.u32];
            for (;;) {
                struct iovec iov = {c->buf + c->len, BUF - 1 - c->len};
                char ctrl[256];
                struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
                                     .msg_controllen = sizeof ctrl};
                ssize_t r = recvmsg(c->fd, &msg, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                    if (c->open) { c->open = 0; closed++; close(c->fd); }
                    break;
                }
                if (r < 0) break;
                c->len += r;
                c->buf[c->len] = 0;
                char *p = c->buf, *nl;
                double recv = now_ms(), arrived = recv;
                for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
                    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                        struct timespec k;
                        memcpy(&k, CMSG_DATA(cm), sizeof k);
                        arrived = k.tv_sec * 1000.0 + k.tv_nsec / 1e6;
                    }
                while ((nl = memchr(p, '\n', c->buf + c->len - p)) != NULL) {
                    if (!c->ready && nl - p <= 1) { c->ready = 1; ready++; }  /* blank line ends headers */
                    else if (c->ready && nl - p > 7 && memcmp(p, "data: T", 7) == 0) {
                        double sent = strtod(p + 7, NULL);
                        if (!first) first = recv;
                        last = recv;
                        events++;
                        if (nlat < MAX_LAT) { arr[nlat] = arrived - sent; lat[nlat++] = recv - sent; }
                    }
                    p = nl + 1;
                }
                c->len = c->buf + c->len - p;
                memmove(c->buf, p, c->len);
                if (c->len >= BUF - 1) c->len = 0;  /* a line longer than the buffer: drop it */
            }
        }
        if (!announced && ready + errors + closed >= n) {
            printf("READY %d\n", ready);
            fflush(stdout);
            announced = 1;
        }
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    qsort(lat, nlat, sizeof(double), cmp_double);
    qsort(arr, nlat, sizeof(double), cmp_double);
    double p50 = nlat ? lat[nlat / 2] : -1, p99 = nlat ? lat[(long)(nlat * 0.99)] : -1;
    double a50 = nlat ? arr[nlat / 2] : -1, a99 = nlat ? arr[(long)(nlat * 0.99)] : -1;
    int still_open = 0;
    for (int i = 0; i < n; i++) still_open += conns[i].open;
    printf("{\"connected\": %d, \"open_at_end\": %d, \"errors\": %d, \"events\": %ld, \"p50_ms\": %.3f, "
           "\"p99_ms\": %.3f, \"arrive_p50_ms\": %.3f, \"arrive_p99_ms\": %.3f, \"receive_span_ms\": %.3f, \"cpu_seconds\": %.3f, \"wall_seconds\": %.3f}\n",
           ready, still_open, errors, events, p50, p99, a50, a99, last - first,
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
           (now_ms() - start) / 1000);
    return 0;
}
