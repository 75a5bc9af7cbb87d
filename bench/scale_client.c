/* The load client of bench/scale_bench.py: up to hundreds of thousands of idle SSE readers on one
 * epoll loop, in one thread, then one broadcast that must reach every one of them.
 *
 *   scale_client HOST PORT PATH CONNECTIONS SOURCE_ADDRS RATE INFLIGHT CONNECT_SECONDS MESSAGES SECONDS
 *
 * Opens CONNECTIONS readers of PATH on HOST (loopback only), at most RATE new connects a second and
 * at most INFLIGHT readers between connect() and their response head at once. Each socket is bound
 * (IP_BIND_ADDRESS_NO_PORT) to a source address in 127.0.0.2 .. 127.0.0.(1+SOURCE_ADDRS), round
 * robin, so each source address has its own ephemeral port range toward HOST:PORT (about 28,000
 * ports each with the default ip_local_port_range).
 *
 * Prints "READY <ready>" once every reader got its response head, failed, or CONNECT_SECONDS passed
 * (the readers still opening are then given up on). Then it counts events until every ready reader
 * got MESSAGES of them, or SECONDS passed. An event's data starts "T<epoch ms>|", its publish time.
 * Prints one JSON line: connected, ready, events, the latency of the first, median, p99 and last
 * receipt (ms from publish: read by this loop, and queued by the kernel on the socket, from
 * SO_TIMESTAMPNS), the errors by kind, and this process's CPU and memory.
 *
 * Memory: one 512-byte line buffer per connection (events here are short; a longer line is dropped
 * and counted), so 100,000 readers cost this process about 55 MB.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
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

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define BUF 512

enum { IDLE = 0, CONNECTING, HEAD, READY, DONE };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t status_seen;  /* the status line was read */
    uint16_t len;
    uint32_t got;         /* events received */
    char buf[BUF];
} conn_t;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, long n, double p) {
    if (!n) return -1;
    long i = (long)(n * p);
    if (i >= n) i = n - 1;
    return v[i];
}

/* counters */
static long n_connect_err = 0, n_addrnotavail = 0, n_refused = 0, n_timedout = 0, n_other_err = 0;
static long n_non200 = 0, n_closed_before_head = 0, n_closed_after_ready = 0, n_long_lines = 0;
static long n_given_up = 0;
static int last_errno = 0;

static void count_errno(int e) {
    n_connect_err++;
    last_errno = e;
    if (e == EADDRNOTAVAIL) n_addrnotavail++;
    else if (e == ECONNREFUSED) n_refused++;
    else if (e == ETIMEDOUT) n_timedout++;
    else n_other_err++;
}

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: %s HOST PORT PATH CONNECTIONS SOURCE_ADDRS RATE INFLIGHT CONNECT_SECONDS "
                        "MESSAGES SECONDS\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]), n = atoi(argv[4]), naddrs = atoi(argv[5]);
    double rate = atof(argv[6]);
    int max_inflight = atoi(argv[7]);
    double connect_seconds = atof(argv[8]);
    int messages = atoi(argv[9]);
    double seconds = atof(argv[10]);
    if (n <= 0 || naddrs <= 0 || naddrs > 65000 || rate <= 0 || max_inflight <= 0 || messages < 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }

    struct in_addr dst;
    if (inet_pton(AF_INET, host, &dst) != 1 || (ntohl(dst.s_addr) >> 24) != 127) {
        fprintf(stderr, "HOST must be an IPv4 loopback address (127.0.0.0/8)\n");
        return 2;
    }

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)n + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want) {
        fprintf(stderr, "open-file limit %ld is below %ld: raise the hard limit (prlimit, or as root)\n",
                (long)rl.rlim_cur, (long)want);
        return 3;
    }

    char request[512];
    int reqlen = snprintf(request, sizeof request,
                          "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n\r\n", path, host, port);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = dst};

    int ep = epoll_create1(0);
    conn_t *conns = calloc(n, sizeof(conn_t));
    long lat_cap = (long)n * (messages > 0 ? messages : 1);
    double *lat = malloc(sizeof(double) * lat_cap), *arr = malloc(sizeof(double) * lat_cap);
    if (!conns || !lat || !arr) { fprintf(stderr, "out of memory\n"); return 3; }
    long events = 0, nlat = 0;
    int next = 0, inflight = 0, ready = 0, failed = 0, announced = 0;
    double start = mono_ms(), ready_at = 0, cpu_at_ready = 0, first_recv = 0, last_recv = 0;
    long expected = 0;

    struct epoll_event evs[4096];
    while (1) {
        double t = mono_ms();
        /* open new connections: paced by RATE, bounded by INFLIGHT */
        if (!announced) {
            long allowed = (long)((t - start) / 1000.0 * rate) + 1;
            while (next < n && next < allowed && inflight < max_inflight) {
                int i = next++;
                conn_t *c = &conns[i];
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
                if (fd < 0) { count_errno(errno); c->state = DONE; failed++; continue; }
                int one = 1;
                setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
                struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0,
                                          .sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % naddrs))};
                if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
                    count_errno(errno); close(fd); c->state = DONE; failed++; continue;
                }
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
                int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
                if (r != 0 && errno != EINPROGRESS) {
                    count_errno(errno); close(fd); c->state = DONE; failed++; continue;
                }
                c->fd = fd;
                c->state = CONNECTING;
                inflight++;
                struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            }
            int settled = ready + failed >= n;
            int late = (t - start) > connect_seconds * 1000;
            if (settled || late) {
                if (late) {  /* give up on the readers still opening; they count as failed */
                    for (int i = 0; i < n; i++) {
                        conn_t *c = &conns[i];
                        if (c->state == CONNECTING || c->state == HEAD) {
                            close(c->fd); c->state = DONE; n_given_up++; failed++; inflight--;
                        } else if (c->state == IDLE) { c->state = DONE; n_given_up++; failed++; }
                    }
                }
                announced = 1;
                ready_at = mono_ms();
                cpu_at_ready = cpu_s();
                expected = (long)ready * messages;
                printf("READY %d\n", ready);
                fflush(stdout);
            }
        } else {
            if (expected > 0 && events >= expected) break;
            if (expected <= 0 && messages > 0) break;  /* nobody to wait for */
            if (t - ready_at > seconds * 1000) break;
        }

        int k = epoll_wait(ep, evs, 4096, announced ? 100 : 2);
        for (int e = 0; e < k; e++) {
            int idx = (int)evs[e].data.u32;
            conn_t *c = &conns[idx];
            if (c->state == DONE) continue;
            if (c->state == CONNECTING) {
                if (!(evs[e].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || (evs[e].events & (EPOLLERR | EPOLLHUP))) {
                    count_errno(err ? err : ECONNRESET);
                    close(c->fd); c->state = DONE; failed++; inflight--;
                    continue;
                }
                if (write(c->fd, request, reqlen) != reqlen) {
                    count_errno(errno);
                    close(c->fd); c->state = DONE; failed++; inflight--;
                    continue;
                }
                c->state = HEAD;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)idx};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            for (;;) {
                struct iovec iov = {c->buf + c->len, BUF - 1 - c->len};
                char ctrl[128];
                struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
                                     .msg_controllen = sizeof ctrl};
                ssize_t r = recvmsg(c->fd, &msg, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                    if (c->state == HEAD) { n_closed_before_head++; failed++; inflight--; }
                    else if (c->state == READY) n_closed_after_ready++;
                    close(c->fd);
                    c->state = DONE;
                    break;
                }
                if (r < 0) break;
                c->len += r;
                c->buf[c->len] = 0;
                char *p = c->buf, *nl;
                double recv = now_ms(), arrived = recv;
                for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
                    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                        struct timespec ts;
                        memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                        arrived = ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
                    }
                int dropped = 0;
                while (c->state != DONE && (nl = memchr(p, '\n', c->buf + c->len - p)) != NULL) {
                    if (c->state == HEAD) {
                        if (!c->status_seen) {
                            c->status_seen = 1;
                            if (nl - p < 12 || memcmp(p + 8, " 200", 4) != 0) {  /* "HTTP/1.1 200" */
                                n_non200++; failed++; inflight--;
                                close(c->fd); c->state = DONE; dropped = 1;
                                break;
                            }
                        } else if (nl - p <= 1) {  /* the blank line ends the head */
                            c->state = READY; ready++; inflight--;
                        }
                    } else if (nl - p > 7 && memcmp(p, "data: T", 7) == 0) {
                        double sent = strtod(p + 7, NULL);
                        if (!first_recv) first_recv = recv;
                        last_recv = recv;
                        events++;
                        c->got++;
                        if (nlat < lat_cap) { arr[nlat] = arrived - sent; lat[nlat++] = recv - sent; }
                    }
                    p = nl + 1;
                }
                if (dropped || c->state == DONE) break;
                c->len = (uint16_t)(c->buf + c->len - p);
                memmove(c->buf, p, c->len);
                if (c->len >= BUF - 1) { c->len = 0; n_long_lines++; }  /* a line longer than the buffer */
            }
        }
    }

    double cpu_end = cpu_s();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    qsort(lat, nlat, sizeof(double), cmp_double);
    qsort(arr, nlat, sizeof(double), cmp_double);
    long open_at_end = 0, readers_complete = 0;
    for (int i = 0; i < n; i++) {
        if (conns[i].state == READY) open_at_end++;
        if (conns[i].state == READY || conns[i].state == DONE)
            if (messages > 0 && conns[i].got >= (uint32_t)messages) readers_complete++;
    }
    printf("{\"connections\": %d, \"ready\": %d, \"failed\": %d, \"connect_seconds\": %.3f, "
           "\"open_at_end\": %ld, \"messages\": %d, \"expected_events\": %ld, \"events\": %ld, "
           "\"readers_with_all_messages\": %ld, "
           "\"first_ms\": %.3f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"last_ms\": %.3f, "
           "\"arrive_first_ms\": %.3f, \"arrive_p50_ms\": %.3f, \"arrive_p99_ms\": %.3f, \"arrive_last_ms\": %.3f, "
           "\"receive_span_ms\": %.3f, "
           "\"errors\": {\"connect\": %ld, \"addr_not_avail\": %ld, \"refused\": %ld, \"timed_out\": %ld, "
           "\"other\": %ld, \"last_errno\": %d, \"non_200\": %ld, \"closed_before_head\": %ld, "
           "\"closed_after_ready\": %ld, \"given_up\": %ld, \"long_lines\": %ld}, "
           "\"source_addrs\": %d, \"cpu_seconds\": %.3f, \"cpu_seconds_connect\": %.3f, "
           "\"cpu_seconds_after_ready\": %.3f, \"wall_seconds_after_ready\": %.3f, \"max_rss_kb\": %ld}\n",
           n, ready, failed, (ready_at - start) / 1000, open_at_end, messages, expected, events, readers_complete,
           pct(lat, nlat, 0), pct(lat, nlat, 0.5), pct(lat, nlat, 0.99), nlat ? lat[nlat - 1] : -1,
           pct(arr, nlat, 0), pct(arr, nlat, 0.5), pct(arr, nlat, 0.99), nlat ? arr[nlat - 1] : -1,
           last_recv - first_recv,
           n_connect_err, n_addrnotavail, n_refused, n_timedout, n_other_err, last_errno, n_non200,
           n_closed_before_head, n_closed_after_ready, n_given_up, n_long_lines,
           naddrs, cpu_end, cpu_at_ready, cpu_end - cpu_at_ready, (mono_ms() - ready_at) / 1000, ru.ru_maxrss);
    return 0;
}
