/* The load client of bench/stream_bench.py: CONNECTIONS streaming GETs on one epoll loop, one thread.
 *
 *   stream_client HOST PORT PATH CONNECTIONS EXPECTED_PER_CONNECTION SECONDS
 *
 * Opens CONNECTIONS connections at once (non-blocking), sends each `GET PATH HTTP/1.1` (Connection:
 * close), reads the response as fast as it comes (256 KiB per read) and counts the NDJSON lines of
 * its body: the chunked transfer coding is decoded (its own CRLFs are not counted) and only non-empty
 * lines count (an NDJSON heartbeat is a bare "\n"). Stops when every connection has ended or SECONDS
 * passed. Prints one JSON line: items in all, connections complete (status 200, EXPECTED lines, body
 * ended), errors, wall time from the first connect to the last end, the slowest and fastest
 * connection, and this process's CPU seconds (so it can be seen not to be the bottleneck).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF (256 * 1024)
#define HEAD_MAX 8192

enum { S_CONNECT, S_HEAD, S_SIZE, S_DATA, S_DATA_END, S_TRAILER, S_IDENTITY, S_DONE };

typedef struct {
    int fd, state, status, chunked, line_empty, ndig, ext;
    long items, left;
    size_t headlen;
    char last;          /* the last body byte seen, across reads: whether a "\n" ends a non-empty line */
    double t_first, t_end;
    char head[HEAD_MAX];
} conn_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Count the non-empty lines in body bytes p[0..n). */
static void count_lines(conn_t *c, const char *p, size_t n) {
    const char *end = p + n, *q = p;
    while (q < end) {
        const char *nl = memchr(q, '\n', end - q);
        if (!nl) break;
        char before = nl > p ? nl[-1] : c->last;
        if (before != '\n') c->items++;
        q = nl + 1;
    }
    if (n) c->last = end[-1];
}

/* Feed body bytes through the chunked decoder (or count them as they are). 0: more wanted; 1: done; -1: bad. */
static int feed_body(conn_t *c, const char *p, size_t n) {
    const char *end = p + n;
    if (!c->chunked) {
        count_lines(c, p, n);
        return 0;
    }
    while (p < end) {
        switch (c->state) {
        case S_SIZE: {  /* hex digits, maybe ";extensions", then CRLF */
            char ch = *p++;
            if (ch == '\n') {
                if (!c->ndig) return -1;
                if (c->left == 0) { c->state = S_TRAILER; c->line_empty = 1; break; }
                c->state = S_DATA;
            } else if (!c->ext && isxdigit((unsigned char)ch)) {
                if (++c->ndig > 12) return -1;
                c->left = c->left * 16 + (isdigit((unsigned char)ch) ? ch - '0' : tolower(ch) - 'a' + 10);
            } else if (ch == ';' || ch == '\r' || ch == ' ' || ch == '\t') {
                c->ext = 1;
            } else if (!c->ext) {
                return -1;
            }
            break;
        }
        case S_DATA: {
            size_t take = (size_t)(end - p) < (size_t)c->left ? (size_t)(end - p) : (size_t)c->left;
            count_lines(c, p, take);
            p += take;
            c->left -= take;
            if (c->left == 0) c->state = S_DATA_END;
            break;
        }
        case S_DATA_END:  /* the CRLF after a chunk's data */
            if (*p++ == '\n') { c->state = S_SIZE; c->left = 0; c->ndig = 0; c->ext = 0; }
            break;
        case S_TRAILER: {  /* trailer lines, up to an empty one */
            char ch = *p++;
            if (ch == '\n') {
                if (c->line_empty) { c->state = S_DONE; return 1; }
                c->line_empty = 1;
            } else if (ch != '\r') {
                c->line_empty = 0;
            }
            break;
        }
        default:
            return -1;
        }
    }
    return 0;
}

static int start_body(conn_t *c) {
    c->head[c->headlen] = 0;
    if (sscanf(c->head, "HTTP/1.%*d %d", &c->status) != 1) return -1;
    c->chunked = 0;
    for (char *line = strstr(c->head, "\r\n"); line && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
        if (!strncasecmp(line + 2, "transfer-encoding:", 18) && strcasestr(line + 2, "chunked") &&
            strcasestr(line + 2, "chunked") < strstr(line + 2, "\r\n"))
            c->chunked = 1;
    }
    c->state = c->chunked ? S_SIZE : S_IDENTITY;
    c->left = 0;
    c->ndig = 0;
    c->ext = 0;
    c->last = '\n';
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT PATH CONNECTIONS EXPECTED_PER_CONNECTION SECONDS\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]), n = atoi(argv[4]);
    long expected = atol(argv[5]);
    double seconds = atof(argv[6]);
    if (n < 1 || n > 10000 || seconds <= 0 || seconds > 600) {
        fprintf(stderr, "connections must be 1..10000 and seconds 0..600\n");
        return 2;
    }

    char request[1024];
    int reqlen = snprintf(request, sizeof request,
                          "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: application/x-ndjson\r\n"
                          "Connection: close\r\n\r\n", path, host, port);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", host);
        return 2;
    }

    int ep = epoll_create1(0);
    conn_t *conns = calloc(n, sizeof(conn_t));
    char *rbuf = malloc(RBUF);
    struct epoll_event *evs = malloc(sizeof(struct epoll_event) * n);
    int open = 0, errors = 0, bad_status = 0;
    double t0 = now_s();

    for (int i = 0; i < n; i++) {
        conn_t *c = &conns[i];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
            close(c->fd);
            c->fd = -1;
            c->state = S_DONE;
            errors++;
            continue;
        }
        c->state = S_CONNECT;
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        open++;
    }

    while (open > 0) {
        double left = t0 + seconds - now_s();
        if (left <= 0) break;
        int k = epoll_wait(ep, evs, n, left > 1 ? 1000 : (int)(left * 1000) + 1);
        if (k < 0 && errno != EINTR) break;
        for (int e = 0; e < k; e++) {
            conn_t *c = &conns[evs[e].data.u32];
            if (c->state == S_DONE) continue;
            int finish = 0, fail = 0;
            if (c->state == S_CONNECT) {
                if (!(evs[e].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || send(c->fd, request, reqlen, MSG_NOSIGNAL) != reqlen) {
                    fail = 1;
                } else {
                    c->state = S_HEAD;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = evs[e].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    continue;
                }
            }
            while (!fail && !finish) {
                ssize_t r = recv(c->fd, rbuf, RBUF, 0);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    if (errno == EINTR) continue;
                    fail = 1;
                    break;
                }
                if (r == 0) {  /* the server closed: the end of an identity body, else too early */
                    if (c->state == S_IDENTITY) finish = 1; else fail = 1;
                    break;
                }
                if (!c->t_first) c->t_first = now_s();
                const char *p = rbuf;
                size_t m = (size_t)r;
                if (c->state == S_HEAD) {
                    size_t take = m < HEAD_MAX - 1 - c->headlen ? m : HEAD_MAX - 1 - c->headlen;
                    memcpy(c->head + c->headlen, p, take);
                    size_t old = c->headlen;
                    c->headlen += take;
                    c->head[c->headlen] = 0;
                    char *hend = strstr(c->head, "\r\n\r\n");
                    if (!hend) {
                        if (c->headlen >= HEAD_MAX - 1) fail = 1;
                        continue;
                    }
                    size_t body_at = (size_t)(hend + 4 - c->head);
                    c->headlen = body_at;
                    if (start_body(c) < 0) { fail = 1; break; }
                    if (c->status != 200) { bad_status++; fail = 1; break; }
                    p += body_at - old;
                    m -= body_at - old;
                }
                int rc = feed_body(c, p, m);
                if (rc < 0) fail = 1;
                if (rc > 0) finish = 1;
            }
            if (!fail && !finish && (evs[e].events & (EPOLLERR | EPOLLHUP)) && c->state != S_IDENTITY) fail = 1;
            if (fail || finish) {
                c->t_end = now_s();
                if (fail || c->items != expected) errors++;
                if (fail) c->state = -1 - c->state;  /* remembered as failed */
                else c->state = S_DONE;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                open--;
            }
        }
    }
    double t_last = 0, slowest = 0, fastest = 1e9;
    long items = 0;
    int complete = 0;
    for (int i = 0; i < n; i++) {
        conn_t *c = &conns[i];
        items += c->items;
        if (c->fd >= 0) { close(c->fd); errors++; }  /* still open at the deadline */
        if (c->state == S_DONE && c->items == expected) {
            complete++;
            if (c->t_end - t0 > slowest) slowest = c->t_end - t0;
            if (c->t_end - t0 < fastest) fastest = c->t_end - t0;
        }
        if (c->t_end > t_last) t_last = c->t_end;
    }
    if (!t_last) t_last = now_s();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("{\"connections\": %d, \"complete\": %d, \"errors\": %d, \"bad_status\": %d, \"timed_out\": %s, "
           "\"items\": %ld, \"wall_seconds\": %.4f, \"slowest_s\": %.4f, \"fastest_s\": %.4f, "
           "\"cpu_seconds\": %.4f}\n",
           n, complete, errors, bad_status, open > 0 ? "true" : "false", items, t_last - t0, slowest,
           complete ? fastest : 0.0, cpu);
    return 0;
}
