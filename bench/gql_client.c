/* The load client of bench/graphql_bench.py: many GraphQL subscribers on one epoll loop in one thread
 * (bench/ws_client.c's loop), over WebSocket or over SSE.
 *
 *   gql_client ws  HOST PORT CONNECTIONS MESSAGES SECONDS QUERY
 *   gql_client sse HOST PORT CONNECTIONS MESSAGES SECONDS QUERY
 *
 * ws: `GET /graphql` with `Sec-WebSocket-Protocol: graphql-transport-ws`; on the 101 it sends
 * {"type":"connection_init"}, on connection_ack {"id":"1","type":"subscribe","payload":{"query":QUERY}}
 * (masked text frames, as clients must), then reads `next` messages. Pings (frames, or the protocol's
 * {"type":"ping"}) are answered.
 * sse: `POST /graphql/sse` with {"query":QUERY} (graphql-sse, distinct connections mode), then reads
 * `data:` lines of the chunked event stream.
 *
 * QUERY must select `seq` and `t` of a field whose resolver answers at once with seq -1: that first
 * result is this client's sign that the subscription is in the server's hub. Once every connection
 * has had it (or failed), "READY <n>" is printed; then messages are read until every subscribed
 * connection had MESSAGES results of seq >= 0 (0: just hold them) or SECONDS passed. Each connection's
 * results are checked: seq 0, 1, 2... in order; one seen twice or out of order is counted.
 * A result's `t` (the publish time, epoch ms) gives two latencies: to the read (p50_ms/p99_ms) and to
 * the kernel's receive timestamp (arrive_*, SO_TIMESTAMPNS), as bench/sse_client.c.
 *
 * Connects are non-blocking, at most WINDOW between connect() and subscribed at once, spread over
 * source addresses 127.0.0.1-127.0.0.8 (ws_client.c explains both). Prints one JSON line at the end.
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

#define BUF 65536
#define MAX_LAT 4000000
#define SPREAD 8
#define WINDOW 128

enum { CONNECTING, HEADERS, ACK_WAIT, SUB_WAIT, LIVE, DEAD };

typedef struct {
    int fd;
    int state;
    size_t len, cap;
    char *buf;
    long next_seq, got, dups;
    int was_live;  /* subscribed once (it may have been cut since) */
} conn_t;

static int ws_mode, port, ep;
static const char *host, *query;
static struct sockaddr_in addr;
static double *lat, *arr;
static long nlat;
static long events, dups, disorder, other_msgs, completes, errors_msgs, pings, bad_results;
static double first_recv, last_recv, first_t = -1, cpu_at_first;
static char request[4096], subscribe_msg[4096];
static int reqlen, sublen;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_lat(double *a, long n, const char *p50, const char *p99) {
    qsort(a, n, sizeof(double), cmp_double);
    printf("\"%s\": %.3f, \"%s\": %.3f, ", p50, n ? a[n / 2] : -1, p99, n ? a[(long)(n * 0.99)] : -1);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;  /* small messages: a spin is fine */
            return -1;
        }
        p += w;
        n -= w;
    }
    return 0;
}

/* A client frame, masked (RFC 6455). Payloads up to 65535 bytes. */
static int send_frame(int fd, int opcode, const unsigned char *payload, size_t n) {
    unsigned char f[8 + 65536];
    static const unsigned char key[4] = {0x12, 0x34, 0x56, 0x78};
    size_t h = 2;
    if (n > 65535) n = 65535;
    f[0] = 0x80 | opcode;
    if (n < 126) {
        f[1] = 0x80 | (unsigned char)n;
    } else {
        f[1] = 0x80 | 126;
        f[2] = (unsigned char)(n >> 8);
        f[3] = (unsigned char)n;
        h = 4;
    }
    memcpy(f + h, key, 4);
    for (size_t j = 0; j < n; j++) f[h + 4 + j] = payload[j] ^ key[j & 3];
    return write_all(fd, (const char *)f, h + 4 + n);
}

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

static int start_conn(conn_t *c, int i) {
    int fd = open_socket(i);
    if (fd < 0) return -1;
    c->fd = fd;
    c->state = CONNECTING;
    c->len = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

/* One result (a `next`'s payload, or an SSE data line's JSON) of connection c. Returns 1 if it was the
 * first result (seq -1): the connection is subscribed now. */
static int result(conn_t *c, const char *p, size_t n, double recv, double arrived) {
    const char *s = memmem(p, n, "\"seq\":", 6), *t = memmem(p, n, "\"t\":", 4);
    if (!s || !t) { bad_results++; return 0; }
    long seq = strtol(s + 6, NULL, 10);
    double sent = strtod(t + 4, NULL);
    if (seq < 0) return c->state == SUB_WAIT;
    if (c->state != LIVE) { bad_results++; return 0; }
    if (!first_recv) { first_recv = recv; cpu_at_first = cpu_seconds(); }
    last_recv = recv;
    if (first_t < 0 || sent < first_t) first_t = sent;
    events++;
    c->got++;
    if (seq < c->next_seq) { dups++; c->dups++; }
    else {
        if (seq > c->next_seq) disorder++;
        c->next_seq = seq + 1;
    }
    if (nlat < MAX_LAT) { arr[nlat] = arrived - sent; lat[nlat++] = recv - sent; }
    return 0;
}

/* What is buffered for a WebSocket: frames. Returns -1 to drop the connection, else how many became
 * subscribed (0 or 1). */
static int ws_frames(conn_t *c, unsigned char **pp, unsigned char *end, double recv, double arrived) {
    unsigned char *p = *pp;
    int subscribed = 0;
    while (end - p >= 2) {
        int op = p[0] & 0x0f;
        uint64_t len = p[1] & 0x7f;
        size_t hl = 2;
        if (p[1] & 0x80) hl += 4;
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
        if (hl + len > c->cap - 1) {  /* larger than the buffer: grow to take it */
            size_t off = p - (unsigned char *)c->buf, total = end - (unsigned char *)c->buf;
            c->cap = hl + len + 1 + BUF;
            c->buf = realloc(c->buf, c->cap);
            p = (unsigned char *)c->buf + off;
            end = (unsigned char *)c->buf + total;
        }
        if ((uint64_t)(end - p) < hl + len) break;
        char *pl = (char *)p + hl;
        if (op == 0x1) {
            if (memmem(pl, len, "\"type\":\"next\"", 13)) {
                if (result(c, pl, len, recv, arrived)) { c->state = LIVE; subscribed++; }
            } else if (memmem(pl, len, "\"type\":\"connection_ack\"", 23) && c->state == ACK_WAIT) {
                if (send_frame(c->fd, 0x1, (unsigned char *)subscribe_msg, sublen) != 0) return -1;
                c->state = SUB_WAIT;
            } else if (memmem(pl, len, "\"type\":\"ping\"", 13)) {
                pings++;
                send_frame(c->fd, 0x1, (const unsigned char *)"{\"type\":\"pong\"}", 15);
            } else if (memmem(pl, len, "\"type\":\"complete\"", 17)) {
                completes++;
            } else if (memmem(pl, len, "\"type\":\"error\"", 14)) {
                errors_msgs++;
                if (errors_msgs < 3) fprintf(stderr, "error message: %.*s\n", (int)len, pl);
            } else {
                other_msgs++;
            }
        } else if (op == 0x9) {
            pings++;
            send_frame(c->fd, 0xA, (unsigned char *)pl, len < 125 ? len : 125);
        } else if (op == 0x8) {
            send_frame(c->fd, 0x8, (unsigned char *)pl, len < 2 ? len : 2);
            *pp = p + hl + len;
            return -1;
        } else if (op != 0xA) {
            other_msgs++;
        }
        p += hl + len;
    }
    *pp = p;
    return subscribed;
}

/* What is buffered for an SSE response (chunked): its lines. Chunk-size lines and blank lines are
 * skipped; every event is one chunk, so no data line is cut by chunk framing. */
static int sse_lines(conn_t *c, unsigned char **pp, unsigned char *end, double recv, double arrived) {
    char *p = (char *)*pp, *nl;
    int subscribed = 0;
    while ((nl = memchr(p, '\n', (char *)end - p)) != NULL) {
        if (nl - p > 6 && memcmp(p, "data: ", 6) == 0) {
            if (result(c, p + 6, nl - p - 6, recv, arrived)) { c->state = LIVE; subscribed++; }
        } else if (nl - p >= 15 && memcmp(p, "event: complete", 15) == 0) {
            completes++;
        }
        p = nl + 1;
    }
    if ((unsigned char *)p == (unsigned char *)c->buf && end - (unsigned char *)c->buf >= (long)c->cap - 1)
        p = (char *)end;  /* a line longer than the buffer: drop it */
    *pp = (unsigned char *)p;
    return subscribed;
}

int main(int argc, char **argv) {
    if (argc != 8 || (strcmp(argv[1], "ws") != 0 && strcmp(argv[1], "sse") != 0)) {
        fprintf(stderr, "usage: %s ws|sse HOST PORT CONNECTIONS MESSAGES SECONDS QUERY\n", argv[0]);
        return 2;
    }
    ws_mode = strcmp(argv[1], "ws") == 0;
    host = argv[2];
    port = atoi(argv[3]);
    int n = atoi(argv[4]);
    long messages = atol(argv[5]);
    double seconds = atof(argv[6]);
    query = argv[7];
    if (strcmp(host, "127.0.0.1") != 0) {
        fprintf(stderr, "load only ever targets 127.0.0.1\n");
        return 2;
    }
    if (strpbrk(query, "\"\\\n")) {
        fprintf(stderr, "the query must need no JSON escaping\n");
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

    if (ws_mode) {
        reqlen = snprintf(request, sizeof request,
                          "GET /graphql HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n", host, port);
        sublen = snprintf(subscribe_msg, sizeof subscribe_msg,
                          "{\"id\":\"1\",\"type\":\"subscribe\",\"payload\":{\"query\":\"%s\"}}", query);
    } else {
        char body[2048];
        int blen = snprintf(body, sizeof body, "{\"query\":\"%s\"}", query);
        reqlen = snprintf(request, sizeof request,
                          "POST /graphql/sse HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          "Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s", host, port, blen, body);
    }

    conn_t *conns = calloc(n, sizeof(conn_t));
    for (int i = 0; i < n; i++) {
        conns[i].fd = -1;
        conns[i].state = DEAD;
        conns[i].cap = BUF;
        conns[i].buf = malloc(BUF);
    }
    int started = 0, pending = 0, subscribed = 0, failed = 0, closed_live = 0, refused = 0, announced = 0;
    long expected = -1;
    double start = now_ms(), cpu_at_ready = 0, ready_at = 0;
    struct epoll_event evs[1024];

    while (1) {
        while (started < n && pending < WINDOW) {
            if (start_conn(&conns[started], started) == 0) pending++;
            else failed++;
            started++;
        }
        double t = now_ms();
        if (t - start > seconds * 1000) break;
        if (announced && messages > 0 && events >= expected) break;
        if (announced && closed_live >= subscribed) break;  /* none subscribed, or every one gone */
        int k = epoll_wait(ep, evs, 1024, 100);
        for (int e = 0; e < k; e++) {
            int i = evs[e].data.u32;
            conn_t *c = &conns[i];
            if (c->state == DEAD) continue;
            if (c->state == CONNECTING) {
                int err = 0;
                socklen_t elen = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen);
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
                if (err || epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0 || write_all(c->fd, request, reqlen) != 0) {
                    c->state = DEAD; failed++; pending--; close(c->fd);
                } else {
                    c->state = HEADERS;
                }
                continue;
            }
            for (;;) {
                if (c->len + 1 >= c->cap) {
                    c->cap *= 2;
                    c->buf = realloc(c->buf, c->cap);
                }
                struct iovec iov = {c->buf + c->len, c->cap - 1 - c->len};
                char ctrl[256];
                struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
                                     .msg_controllen = sizeof ctrl};
                ssize_t r = recvmsg(c->fd, &msg, 0);
                int drop = 0;
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) drop = 1;
                else if (r < 0) break;
                else {
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
                    if (c->state == HEADERS) {
                        char *he = memmem(c->buf, c->len, "\r\n\r\n", 4);
                        if (!he) { if (drained) break; continue; }
                        int want = ws_mode ? 101 : 200;
                        if (c->len < 12 || atoi(c->buf + 9) != want ||
                            (ws_mode && !memmem(c->buf, he - c->buf, "graphql-transport-ws", 20))) {
                            if (refused < 3) fprintf(stderr, "refused: %.*s\n", (int)(he - c->buf), c->buf);
                            refused++;
                            drop = 1;
                        } else {
                            p = (unsigned char *)he + 4;
                            if (ws_mode) {
                                static const char init[] = "{\"type\":\"connection_init\"}";
                                if (send_frame(c->fd, 0x1, (const unsigned char *)init, sizeof init - 1) != 0) drop = 1;
                                c->state = ACK_WAIT;
                            } else {
                                c->state = SUB_WAIT;
                            }
                        }
                    }
                    if (!drop) {
                        int s = ws_mode ? ws_frames(c, &p, end, recv, arrived) : sse_lines(c, &p, end, recv, arrived);
                        if (s < 0) drop = 1;
                        else if (s > 0) { subscribed++; pending--; c->was_live = 1; }
                        /* re-read: ws_frames may have grown (moved) the buffer */
                        size_t off = p - (unsigned char *)c->buf;
                        c->len -= off;
                        memmove(c->buf, c->buf + off, c->len);
                    }
                    if (!drop && drained) break;
                }
                if (drop) {
                    if (c->state == LIVE) closed_live++;
                    else { failed++; pending--; }
                    c->state = DEAD;
                    close(c->fd);
                    break;
                }
            }
        }
        if (!announced && subscribed + failed >= n) {
            announced = 1;
            expected = (long)subscribed * messages;
            cpu_at_ready = cpu_seconds();
            ready_at = now_ms();
            printf("READY %d\n", subscribed);
            fflush(stdout);
        }
    }

    double cpu_end = cpu_seconds(), end_ms = now_ms();
    long short_conns = 0, missing = 0;
    for (int i = 0; i < n; i++) {  /* what a subscribed connection did not get (its duplicates do not count) */
        long distinct = conns[i].got - conns[i].dups;
        if (conns[i].was_live && messages > 0 && distinct < messages) {
            short_conns++;
            missing += messages - distinct;
        }
    }
    int open_at_end = 0;
    for (int i = 0; i < n; i++) open_at_end += conns[i].state == LIVE;
    printf("{\"mode\": \"%s\", \"subscribed\": %d, \"failed\": %d, \"refused\": %d, \"closed_live\": %d, "
           "\"open_at_end\": %d, \"events\": %ld, \"expected\": %ld, \"missing\": %ld, \"short_conns\": %ld, "
           "\"dups\": %ld, \"disorder\": %ld, \"completes\": %ld, \"error_msgs\": %ld, \"other_msgs\": %ld, "
           "\"bad_results\": %ld, \"pings\": %ld, ",
           ws_mode ? "ws" : "sse", subscribed, failed, refused, closed_live, open_at_end, events,
           expected < 0 ? 0 : expected, missing, short_conns, dups, disorder, completes, errors_msgs, other_msgs,
           bad_results, pings);
    long m = nlat;
    print_lat(lat, m, "p50_ms", "p99_ms");
    print_lat(arr, m, "arrive_p50_ms", "arrive_p99_ms");
    printf("\"first_recv_ms\": %.3f, \"last_recv_ms\": %.3f, \"first_t_ms\": %.3f, \"attach_s\": %.3f, "
           "\"cpu_seconds\": %.3f, \"cpu_after_ready\": %.3f, \"cpu_in_span\": %.3f, \"wall_after_ready\": %.3f}\n",
           first_recv, last_recv, first_t, ready_at ? (ready_at - start) / 1000 : -1, cpu_end, cpu_end - cpu_at_ready,
           first_recv ? cpu_end - cpu_at_first : 0, ready_at ? (end_ms - ready_at) / 1000 : 0);
    return 0;
}
