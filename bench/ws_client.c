/* The load client of bench/ws_fanout_bench.py: many WebSocket readers, or many long-pollers, on one
 * epoll loop in one thread (bench/sse_client.c's loop, with WebSocket framing and HTTP polling).
 *
 *   ws_client ws   HOST PORT PATH CONNECTIONS EXPECTED_EVENTS SECONDS
 *   ws_client poll HOST PORT PATH CONNECTIONS SECONDS WARMUP_SECONDS
 *
 * ws: opens CONNECTIONS sockets with an HTTP/1.1 upgrade (no subprotocol, no extension), prints
 * "READY <n>" once every socket has its 101 (or failed), then reads the server's unmasked frames until
 * EXPECTED_EVENTS text frames arrived in all (0: just hold the sockets) or SECONDS passed. A ping is
 * answered with a (masked) pong, a close with a close; the client sends nothing else. A text frame
 * whose payload starts "T<epoch ms>|" is an event: its publish time gives two latencies, to the read
 * (p50_ms/p99_ms) and to the kernel's receive timestamp (arrive_*, SO_TIMESTAMPNS), as sse_client.c.
 *
 * poll: CONNECTIONS long-pollers of `PATH?transport=poll`, each on one kept-alive connection: the next
 * poll (with the answer's connectionId and lastEventId) goes as soon as an answer is read. Counting
 * starts once every poller has had one answer (or WARMUP_SECONDS passed) and lasts SECONDS: polls
 * answered, events in them (`"data":"T<ms>|...`), their publish-to-read latency. A connection the
 * server closes is opened again and polls on with the same connectionId and cursor.
 *
 * Connects are non-blocking, with at most WINDOW (128, the listen backlog aiohttp uses) sockets between
 * connect() and their first answer (the 101, or a first poll's answer) at once: a blocking connect
 * into a full accept queue waits out SYN retransmits (1 s, 3 s...), which made 5,000 WebSocket
 * handshakes to aiohttp take over 30 s. Sockets are spread over source addresses 127.0.0.1-127.0.0.8
 * (IP_BIND_ADDRESS_NO_PORT), so many runs in a row never run out of ephemeral ports. Prints one JSON
 * line at the end.
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
#include <strings.h>
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

#define WS_BUF 65536
#define MAX_LAT 8000000
#define SPREAD 8
#define WINDOW 128

typedef struct {
    int fd;
    int ready;  /* ws: 101 seen; poll: answered at least once */
    int open;
    int connecting;  /* connect() under way: waiting for EPOLLOUT */
    size_t len, cap;
    char *buf;
    /* poll */
    char cid[64], last[128];
    int have_last;
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

static const char *host, *path;
static int port, ep;
static struct sockaddr_in addr;
static double *lat, *arr;
static long nlat;

static int open_socket(int i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
    src.sin_addr.s_addr = htonl(0x7f000001 + (i % SPREAD));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Start connection i: non-blocking connect, EPOLLOUT tells when it is through. 0, or -1 on failure. */
static int start_conn(conn_t *c, int i) {
    int fd = open_socket(i);
    if (fd < 0) return -1;
    c->fd = fd;
    c->open = 1;
    c->connecting = 1;
    c->len = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

/* EPOLLOUT on a connecting socket: 0 and reading from now on, or -1 (the connect failed). */
static int connected(conn_t *c, int i) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    c->connecting = 0;
    if (err) return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    return 0;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;  /* tiny control frames: a spin is fine */
            return -1;
        }
        p += w;
        n -= w;
    }
    return 0;
}

/* A client frame: masked, as RFC 6455 requires of clients. Only pongs and closes (< 126 bytes). */
static void send_frame(int fd, int opcode, const unsigned char *payload, size_t n) {
    unsigned char f[2 + 4 + 125];
    static const unsigned char key[4] = {0x12, 0x34, 0x56, 0x78};
    if (n > 125) n = 125;
    f[0] = 0x80 | opcode;
    f[1] = 0x80 | (unsigned char)n;
    memcpy(f + 2, key, 4);
    for (size_t j = 0; j < n; j++) f[6 + j] = payload[j] ^ key[j & 3];
    write_all(fd, (const char *)f, 6 + n);
}

static void record(double sent, double recv, double arrived) {
    if (nlat < MAX_LAT) { arr[nlat] = arrived - sent; lat[nlat++] = recv - sent; }
}

static void print_lat(double *a, long n, const char *p50, const char *p99) {
    qsort(a, n, sizeof(double), cmp_double);
    printf("\"%s\": %.3f, \"%s\": %.3f, ", p50, n ? a[n / 2] : -1, p99, n ? a[(long)(n * 0.99)] : -1);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------- WebSocket readers */

static int run_ws(int n, long expected, double seconds) {
    char request[512];
    int reqlen = snprintf(request, sizeof request,
                          "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                          path, host, port);
    conn_t *conns = calloc(n, sizeof(conn_t));
    long events = 0, other_frames = 0, pings = 0;
    int ready = 0, closed = 0, errors = 0, refused = 0, close_frames = 0, announced = 0;
    double first = 0, last = 0, start = now_ms();

    int started = 0, pending = 0;  /* pending: connecting, or waiting for its 101 */
    for (int i = 0; i < n; i++) {
        conns[i].fd = -1;
        conns[i].cap = WS_BUF;
        conns[i].buf = malloc(WS_BUF);
    }

    struct epoll_event evs[1024];
    while (1) {
        while (started < n && pending < WINDOW) {
            if (start_conn(&conns[started], started) == 0) pending++;
            else errors++;
            started++;
        }
        double t = now_ms();
        if (t - start > seconds * 1000) break;
        if (expected > 0 && events >= expected) break;
        if (expected <= 0 && announced && closed + errors >= n) break;
        int k = epoll_wait(ep, evs, 1024, 100);
        for (int e = 0; e < k; e++) {
            conn_t *c = &conns[evs[e].data.u32];
            if (c->connecting) {
                if (connected(c, evs[e].data.u32) != 0 || write_all(c->fd, request, reqlen) != 0) {
                    c->open = 0; errors++; pending--; close(c->fd);
                }
                continue;
            }
            while (c->open) {
                struct iovec iov = {c->buf + c->len, c->cap - 1 - c->len};
                char ctrl[256];
                struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
                                     .msg_controllen = sizeof ctrl};
                ssize_t r = recvmsg(c->fd, &msg, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                    c->open = 0; closed++; close(c->fd);
                    if (!c->ready) pending--;
                    break;
                }
                if (r < 0) break;
                /* a read that did not fill the buffer took all there was: no second recvmsg to hear
                   EAGAIN (epoll is level-triggered and says when more comes), half the syscalls */
                int drained = (size_t)r < iov.iov_len;
                c->len += r;
                c->buf[c->len] = 0;
                double recv = now_ms(), arrived = recv;
                for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
                    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                        struct timespec ts;
                        memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                        arrived = ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
                    }
                unsigned char *p = (unsigned char *)c->buf, *end = p + c->len;
                if (!c->ready) {
                    char *he = memmem(c->buf, c->len, "\r\n\r\n", 4);
                    if (!he) {
                        if (c->len >= c->cap - 1) { c->open = 0; closed++; refused++; pending--; close(c->fd); }
                        continue;
                    }
                    if (c->len < 12 || memcmp(c->buf + 9, "101", 3) != 0) {  /* "HTTP/1.1 101" */
                        c->open = 0; closed++; refused++; pending--; close(c->fd);
                        break;
                    }
                    c->ready = 1;
                    ready++;
                    pending--;
                    p = (unsigned char *)he + 4;
                }
                while (end - p >= 2) {
                    int op = p[0] & 0x0f;
                    uint64_t len = p[1] & 0x7f;
                    size_t hl = 2;
                    if (p[1] & 0x80) hl += 4;  /* a server never masks; skipped if one did */
                    if (len == 126) {
                        if (end - p < 4) break;
                        len = ((uint64_t)p[2] << 8) | p[3];
                        hl += 2;
                    } else if (len == 127) {
                        if (end - p < 10) break;
                        len = 0;
                        for (int j = 0; j < 8; j++) len = (len << 8) | p[2 + j];
                        hl += 8;
                    }
                    if (hl + len > c->cap - 1) {  /* larger than any frame here: grow to take it */
                        size_t off = p - (unsigned char *)c->buf;
                        c->cap = hl + len + 1 + WS_BUF;
                        c->buf = realloc(c->buf, c->cap);
                        p = (unsigned char *)c->buf + off;
                        end = (unsigned char *)c->buf + c->len;
                    }
                    if ((uint64_t)(end - p) < hl + len) break;
                    unsigned char *pl = p + hl;
                    if (op == 0x1 || op == 0x0 || op == 0x2) {
                        if (len > 1 && pl[0] == 'T') {
                            /* the payload is followed by more bytes or the NUL above: strtod stops at '|' */
                            double sent = strtod((const char *)pl + 1, NULL);
                            if (!first) first = recv;
                            last = recv;
                            events++;
                            record(sent, recv, arrived);
                        } else {
                            other_frames++;
                        }
                    } else if (op == 0x9) {
                        pings++;
                        send_frame(c->fd, 0xA, pl, len);
                    } else if (op == 0x8) {
                        close_frames++;
                        send_frame(c->fd, 0x8, pl, len < 2 ? len : 2);
                    }
                    p += hl + len;
                }
                c->len = end - p;
                memmove(c->buf, p, c->len);
                if (drained) break;
            }
        }
        if (!announced && ready + errors + closed >= n) {
            printf("READY %d\n", ready);
            fflush(stdout);
            announced = 1;
        }
    }

    double cpu = cpu_seconds();
    int still_open = 0;
    for (int i = 0; i < n; i++) still_open += conns[i].open;
    printf("{\"mode\": \"ws\", \"connected\": %d, \"open_at_end\": %d, \"errors\": %d, \"refused\": %d, "
           "\"close_frames\": %d, \"pings\": %ld, \"other_frames\": %ld, \"events\": %ld, ",
           ready, still_open, errors, refused, close_frames, pings, other_frames, events);
    long m = nlat;
    print_lat(lat, m, "p50_ms", "p99_ms");
    print_lat(arr, m, "arrive_p50_ms", "arrive_p99_ms");
    printf("\"receive_span_ms\": %.3f, \"cpu_seconds\": %.3f, \"wall_seconds\": %.3f}\n", last - first, cpu,
           (now_ms() - start) / 1000);
    return 0;
}

/* ---------------------------------------------------------------- long-pollers */

static int send_poll(conn_t *c) {
    char req[512];
    int n;
    if (c->cid[0])
        n = snprintf(req, sizeof req, "GET %s?transport=poll&connectionId=%s%s%s HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
                     path, c->cid, c->have_last ? "&lastEventId=" : "", c->have_last ? c->last : "", host, port);
    else
        n = snprintf(req, sizeof req, "GET %s?transport=poll HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path, host, port);
    return write_all(c->fd, req, n);
}

/* Copy the JSON string value after `key` (e.g. "\"connectionId\":") into out; 0 if absent or null. */
static int json_string(const char *body, size_t blen, const char *key, char *out, size_t outsz) {
    const char *k = memmem(body, blen, key, strlen(key));
    if (!k) return 0;
    const char *v = k + strlen(key), *end = body + blen;
    if (v >= end || *v != '"') return 0;
    v++;
    const char *q = memchr(v, '"', end - v);
    if (!q || (size_t)(q - v) >= outsz) return 0;
    memcpy(out, v, q - v);
    out[q - v] = 0;
    return 1;
}

/* (Re)open poller i's connection; its poll goes once the connect is through. */
static int reopen(conn_t *c, int i) {
    if (c->open) close(c->fd);
    c->open = 0;
    return start_conn(c, i);
}

static int run_poll(int n, double seconds, double warmup) {
    conn_t *conns = calloc(n, sizeof(conn_t));
    long polls = 0, events = 0, empty = 0, bad_status = 0, reconnects = 0, polls_total = 0, events_total = 0;
    int ready = 0, errors = 0, measuring = 0;
    double start = now_ms(), m_start = 0, m_end = 0, cpu_at_start = 0;

    int started = 0, pending = 0;  /* pending: not answered once yet */
    for (int i = 0; i < n; i++) {
        conns[i].fd = -1;
        conns[i].cap = WS_BUF;
        conns[i].buf = malloc(WS_BUF);
    }

    struct epoll_event evs[1024];
    while (1) {
        while (started < n && pending < WINDOW) {
            if (reopen(&conns[started], started) == 0) pending++;
            else errors++;
            started++;
        }
        double t = now_ms();
        if (!measuring && (ready + errors >= n || t - start > warmup * 1000)) {
            measuring = 1;
            m_start = t;
            cpu_at_start = cpu_seconds();
            nlat = 0;
            printf("READY %d\n", ready);
            fflush(stdout);
        }
        if (measuring && t - m_start > seconds * 1000) break;
        int k = epoll_wait(ep, evs, 1024, 100);
        for (int e = 0; e < k; e++) {
            int i = evs[e].data.u32;
            conn_t *c = &conns[i];
            if (c->connecting) {
                if (connected(c, i) != 0 || send_poll(c) != 0) {
                    reconnects++;
                    if (reopen(c, i) != 0) { errors++; c->open = 0; if (!c->ready) pending--; }
                }
                continue;
            }
            while (c->open) {
                if (c->len + 1 >= c->cap) {
                    c->cap *= 2;
                    c->buf = realloc(c->buf, c->cap);
                }
                ssize_t r = read(c->fd, c->buf + c->len, c->cap - 1 - c->len);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                    reconnects++;
                    if (reopen(c, i) != 0) { errors++; c->open = 0; if (!c->ready) pending--; }
                    break;
                }
                if (r < 0) break;
                c->len += r;
                c->buf[c->len] = 0;
                double recv = now_ms();
                /* every complete answer in the buffer (there is at most one: one poll in flight) */
                char *he = memmem(c->buf, c->len, "\r\n\r\n", 4);
                if (!he) continue;
                size_t head_len = he + 4 - c->buf;
                long clen = -1;
                for (char *h = c->buf; h < he; ) {
                    char *eol = memmem(h, he + 2 - h, "\r\n", 2);
                    if (!eol) break;
                    if (eol - h > 15 && strncasecmp(h, "content-length:", 15) == 0) clen = atol(h + 15);
                    h = eol + 2;
                }
                if (clen < 0) { bad_status++; reconnects++; if (reopen(c, i) != 0) { errors++; c->open = 0; } break; }
                if (c->len < head_len + (size_t)clen) continue;
                int status = atoi(c->buf + 9);
                char *body = c->buf + head_len;
                if (status == 200) {
                    long got = 0;
                    for (char *d = body; (d = memmem(d, body + clen - d, "\"data\":\"T", 9)) != NULL; d += 9) {
                        got++;
                        if (measuring) record(strtod(d + 9, NULL), recv, recv);
                    }
                    char cid[64];
                    if (json_string(body, clen, "\"connectionId\":", cid, sizeof cid)) strcpy(c->cid, cid);
                    c->have_last = json_string(body, clen, "\"lastEventId\":", c->last, sizeof c->last);
                    if (!c->ready) { c->ready = 1; ready++; pending--; }
                    polls_total++;
                    events_total += got;
                    if (measuring) { polls++; events += got; if (!got) empty++; }
                } else {
                    bad_status++;
                }
                size_t used = head_len + clen;
                memmove(c->buf, c->buf + used, c->len - used);
                c->len -= used;
                if (send_poll(c) != 0) { reconnects++; if (reopen(c, i) != 0) { errors++; c->open = 0; } break; }
            }
        }
    }
    m_end = now_ms();
    double cpu = cpu_seconds() - cpu_at_start, window = (m_end - m_start) / 1000;
    printf("{\"mode\": \"poll\", \"pollers\": %d, \"answered_once\": %d, \"errors\": %d, \"bad_status\": %ld, "
           "\"reconnects\": %ld, \"window_seconds\": %.3f, \"polls\": %ld, \"empty_polls\": %ld, \"events\": %ld, "
           "\"polls_total\": %ld, \"events_total\": %ld, ",
           n, ready, errors, bad_status, reconnects, window, polls, empty, events, polls_total, events_total);
    print_lat(lat, nlat, "p50_ms", "p99_ms");
    printf("\"cpu_seconds\": %.3f, \"wall_seconds\": %.3f}\n", cpu, window);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "ws") != 0 && strcmp(argv[1], "poll") != 0) || argc != 8) {
        fprintf(stderr, "usage: %s ws HOST PORT PATH CONNECTIONS EXPECTED_EVENTS SECONDS\n"
                        "       %s poll HOST PORT PATH CONNECTIONS SECONDS WARMUP_SECONDS\n", argv[0], argv[0]);
        return 2;
    }
    host = argv[2];
    port = atoi(argv[3]);
    path = argv[4];
    int n = atoi(argv[5]);
    if (strcmp(host, "127.0.0.1") != 0) {
        fprintf(stderr, "load only ever targets 127.0.0.1\n");
        return 2;
    }

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)n + 64 ? rl.rlim_max : (rlim_t)n + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, host, &addr.sin_addr);
    ep = epoll_create1(0);
    lat = malloc(sizeof(double) * MAX_LAT);
    arr = malloc(sizeof(double) * MAX_LAT);

    if (strcmp(argv[1], "ws") == 0) return run_ws(n, atol(argv[6]), atof(argv[7]));
    return run_poll(n, atof(argv[6]), atof(argv[7]));
}
