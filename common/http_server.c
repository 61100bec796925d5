/*
 * http_server: the acceptor that gives each connection to the least loaded worker, the workers
 * (one-thread libmicrohttpd daemons), and the server's start and stop.
 */
#define _GNU_SOURCE /* accept4(2) */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "http.h"
#include "http_internal.h"
#include "log.h"
#include "ratelimit.h"

static void http_connection_notify(void *cls, struct MHD_Connection *connection,
                                   void **socket_context, enum MHD_ConnectionNotificationCode toe)
{
    (void)connection;
    (void)socket_context;
    struct http_worker *w = cls;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
        atomic_fetch_sub(&w->connections, 1);
}

/*
 * Gives a new connection to the worker holding the fewest. MHD's own thread pool lets every
 * thread race for accept(2), and a burst of connections lands unevenly: a thread with twice its
 * share serves each of its clients twice as slowly, which is what the tail latency shows.
 */
static void http_assign(struct http_server *srv, int fd, const struct sockaddr *addr,
                        socklen_t addrlen)
{
    long total = 0, least = LONG_MAX;
    size_t pick = 0;
    for (size_t k = 0; k < srv->nworkers; k++) {
        size_t i = (srv->next_worker + k) % srv->nworkers;
        long n = atomic_load(&srv->workers[i].connections);
        total += n;
        if (n < least) {
            least = n;
            pick = i;
        }
    }
    if (total >= srv->connection_limit) {
        atomic_fetch_add(&srv->rejected, 1);
        close(fd);
        return;
    }
    srv->next_worker = pick + 1 < srv->nworkers ? pick + 1 : 0;
    struct http_worker *w = &srv->workers[pick];
    atomic_fetch_add(&w->connections, 1);
    /* MHD owns the socket from here, and closes it itself on failure. */
    if (MHD_add_connection(w->daemon, fd, addr, addrlen) != MHD_YES) {
        atomic_fetch_sub(&w->connections, 1);
        log_event(LOG_WARN, "http.add_connection_failed", "{s:s}", "error", strerror(errno));
    }
}

static void *http_acceptor(void *arg)
{
    struct http_server *srv = arg;
    struct pollfd fds[2] = {{.fd = srv->listen_fd, .events = POLLIN},
                            {.fd = srv->wake_fd, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_event(LOG_ERROR, "http.poll_failed", "{s:s}", "error", strerror(errno));
            return NULL;
        }
        if (fds[1].revents)
            return NULL;
        for (;;) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            int fd =
                accept4(srv->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0) {
                http_assign(srv, fd, (struct sockaddr *)&ss, sl);
                continue;
            }
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                /* Out of descriptors or memory: the backlog keeps the clients; try again soon. */
                log_event(LOG_WARN, "http.accept_failed", "{s:s}", "error", strerror(errno));
                clock_sleep_ms(50);
            }
            break;
        }
    }
}

/* The listening socket in *fd: STATUS_INVALID for a bad address, UNAVAILABLE if it is taken. */
static enum status http_listen(const struct http_server_config *cfg, int *out)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg->port)};
    if (inet_pton(AF_INET, cfg->bind, &addr.sin_addr) != 1) {
        log_event(LOG_ERROR, "http.bad_bind_address", "{s:s}", "bind", cfg->bind);
        return STATUS_INVALID;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 1024) != 0) {
        log_event(LOG_ERROR, "http.listen_failed", "{s:s, s:i, s:s}", "bind", cfg->bind, "port",
                  (int)cfg->port, "error", strerror(errno));
        if (fd >= 0)
            close(fd);
        return STATUS_UNAVAILABLE;
    }
    *out = fd;
    return STATUS_OK;
}

static enum status http_worker_start(struct http_server *srv, struct http_worker *w,
                                     const struct http_server_config *cfg)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG;
    w->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, http_access, srv, MHD_OPTION_NOTIFY_COMPLETED, http_completed, srv,
        MHD_OPTION_NOTIFY_CONNECTION, http_connection_notify, w, MHD_OPTION_URI_LOG_CALLBACK,
        http_uri_log, srv, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->timeout_s,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->connection_limit, MHD_OPTION_END);
    return w->daemon ? STATUS_OK : STATUS_INTERNAL;
}

static void http_workers_stop(struct http_server *srv)
{
    /*
     * Requests under way are finished and their answers sent, for up to 10 s (a deferred one is
     * answered by its deadline if its work does not come back); idle keep-alive connections hold
     * nothing. MHD must not stop with a suspended connection at all: the deferred requests still
     * waiting then are answered 503 now, and their workers given 5 s to send that.
     */
    for (int waited = 0; atomic_load(&srv->inflight) > 0 && waited < 10000; waited++)
        clock_sleep_ms(1);
    if (srv->defer_thread_started) {
        pthread_mutex_lock(&srv->defer_lock);
        srv->defer_stop = 1;
        pthread_cond_signal(&srv->defer_cond);
        pthread_mutex_unlock(&srv->defer_lock);
        pthread_join(srv->defer_thread, NULL);
        srv->defer_thread_started = 0;
        http_defer_expire(srv, 1);
    }
    /* what the database threads still hold is run and given back (late: only released) */
    http_work_stop(srv->work);
    srv->work = NULL;
    for (int waited = 0; atomic_load(&srv->deferred) > 0 && waited < 5000; waited++)
        clock_sleep_ms(1);
    if (atomic_load(&srv->deferred) > 0)
        log_event(LOG_ERROR, "http.stop_with_deferred_requests", "{s:I}", "deferred",
                  (json_int_t)atomic_load(&srv->deferred));
    for (size_t i = 0; i < srv->nworkers; i++) {
        if (srv->workers[i].daemon)
            MHD_stop_daemon(srv->workers[i].daemon);
    }
    free(srv->workers);
    srv->workers = NULL;
    ratelimit_free(srv->key_limit);
    srv->key_limit = NULL;
    pthread_mutex_destroy(&srv->defer_lock);
    for (size_t i = 0; i < HTTP_DEFER_SHARDS; i++)
        pthread_mutex_destroy(&srv->defer_shards[i].lock);
    pthread_cond_destroy(&srv->defer_cond);
}

enum status http_server_start(struct http_server *srv, const struct http_server_config *cfg,
                              const struct http_route *routes, size_t nroutes, void *app,
                              struct auth *auth)
{
    char why[256];

    if (http_routes_check(routes, nroutes, why, sizeof why) != STATUS_OK) {
        log_event(LOG_ERROR, "http.bad_route_table", "{s:s}", "problem", why);
        return STATUS_INVALID;
    }
    memset(srv, 0, sizeof *srv);
    srv->listen_fd = srv->wake_fd = -1;
    srv->routes = routes;
    srv->nroutes = nroutes;
    srv->app = app;
    srv->auth = auth;
    srv->body_limit = (size_t)cfg->body_limit;
    srv->connection_limit = cfg->connection_limit;
    srv->defer_timeout_ms =
        cfg->defer_timeout_ms > 0 ? cfg->defer_timeout_ms : HTTP_DEFER_TIMEOUT_MS_DEFAULT;
    srv->nworkers = cfg->threads > 0 ? (size_t)cfg->threads : 1;
    pthread_condattr_t attr;
    pthread_mutex_init(&srv->defer_lock, NULL);
    for (size_t i = 0; i < HTTP_DEFER_SHARDS; i++)
        pthread_mutex_init(&srv->defer_shards[i].lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->defer_cond, &attr);
    pthread_condattr_destroy(&attr);
    srv->stats = http_route_stats_new(nroutes);
    srv->workers = xcalloc(srv->nworkers, sizeof *srv->workers);
    if (cfg->rate_limit_rps > 0 && cfg->rate_limit_burst > 0)
        srv->key_limit = ratelimit_new(cfg->rate_limit_rps, cfg->rate_limit_burst, 4096);

    enum status st = http_listen(cfg, &srv->listen_fd);
    if (st != STATUS_OK)
        goto fail;
    srv->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (srv->wake_fd < 0) {
        st = STATUS_INTERNAL;
        goto fail;
    }
    for (size_t i = 0; i < srv->nworkers; i++) {
        st = http_worker_start(srv, &srv->workers[i], cfg);
        if (st != STATUS_OK) {
            log_event(LOG_ERROR, "http.start_failed", "{s:i}", "worker", (int)i);
            goto fail;
        }
    }
    srv->work = http_work_start(cfg->db_pool, cfg->db_threads > 0 ? (size_t)cfg->db_threads : 4);
    if (!srv->work) {
        st = STATUS_INTERNAL;
        goto fail;
    }
    if (pthread_create(&srv->defer_thread, NULL, http_defer_watch, srv) != 0) {
        st = STATUS_INTERNAL;
        goto fail;
    }
    srv->defer_thread_started = 1;
    if (pthread_create(&srv->acceptor, NULL, http_acceptor, srv) != 0) {
        st = STATUS_INTERNAL;
        goto fail;
    }
    log_event(LOG_INFO, "http.listening", "{s:s, s:i, s:i}", "bind", cfg->bind, "port",
              (int)cfg->port, "threads", (int)srv->nworkers);
    return STATUS_OK;

fail:
    http_workers_stop(srv);
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->wake_fd >= 0)
        close(srv->wake_fd);
    free(srv->stats);
    srv->stats = NULL;
    return st;
}

void http_server_stop(struct http_server *srv)
{
    if (!srv->stats)
        return;
    /* Stop accepting first, then let each worker finish what it is serving. */
    uint64_t one = 1;
    if (write(srv->wake_fd, &one, sizeof one) != (ssize_t)sizeof one)
        log_event(LOG_ERROR, "http.stop_signal_failed", "{s:s}", "error", strerror(errno));
    pthread_join(srv->acceptor, NULL);
    close(srv->listen_fd);
    close(srv->wake_fd);
    http_workers_stop(srv);
    free(srv->stats);
    srv->stats = NULL;
}
