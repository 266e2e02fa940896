/* libwflo metrics: counters, gauges and histograms that libwflo records
 * itself as its patterns run, exported in the Prometheus text format, as
 * JSON, or over a small HTTP listener on a libuv loop. Include <wflo.h>,
 * not this file.
 *
 * The metrics (families) and their labels:
 *   wflo_retry_attempts_total{policy,result}        counter
 *       result: success | retry | failure (the attempt's own outcome:
 *       failed and retried, or failed and ended the execution)
 *   wflo_retry_delay_seconds                        histogram
 *   wflo_circuit_breaker_state{name}                gauge 0 closed,
 *       1 half-open, 2 open
 *   wflo_circuit_breaker_transitions_total{name,from,to}   counter
 *       from, to: closed | open | half_open
 *   wflo_circuit_breaker_calls_total{name,outcome}  counter
 *       outcome: success | failure | ignored | rejected
 *   wflo_lock_wait_seconds{resource}                histogram
 *   wflo_lock_contention_rate{resource}             gauge (0..1)
 *   wflo_lock_holders{resource}                     gauge
 *   wflo_lock_timeouts_total{resource}              counter
 *   wflo_budget_spent_usd_total{workflow}           counter (USD)
 *   wflo_budget_refusals_total{workflow}            counter
 *   wflo_llm_tokens_total{model,kind}               counter
 *       kind: prompt | completion
 *
 * Series (one tuple of label values) appear on first use. Objects with the
 * same name share their series. When the last object using a gauge series
 * is destroyed (a breaker, a lock), the series leaves the exposition;
 * counter and histogram series keep their values for the life of the
 * process, as Prometheus clients do, until wflo_metrics_reset().
 *
 * Metrics are enabled by default. Updates are lock-free; while disabled a
 * counter or histogram update costs one branch and changes nothing. Gauges
 * mirror current state and are kept current even while disabled.
 *
 * Memory: series are allocated with libwflo's allocator, so
 * wflo_set_allocator() returns WFLO_E_STATE while any series exists. Call
 * wflo_metrics_reset() once every libwflo object is gone to free them. */
#ifndef WFLO_METRICS_H
#define WFLO_METRICS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A metrics HTTP listener (wflo_metrics_serve). */
typedef struct wflo_metrics_server_s wflo_metrics_server_t;

/* Content-Type of the text exposition (Prometheus text format 0.0.4). */
#define WFLO_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Largest HTTP request head (request line and headers) the listener reads;
 * a larger one is answered with 431 and the connection closed. */
#define WFLO_METRICS_MAX_REQUEST 8192

/* Seconds a client has to send its request before the listener closes the
 * connection. */
#define WFLO_METRICS_REQUEST_TIMEOUT 10.0

/* Most connections the listener serves at once; further ones are accepted
 * and closed at once. */
#define WFLO_METRICS_MAX_CONNECTIONS 64

/* Switches metric recording on (the default) or off at run time. Series and
 * their values are kept while off; counters and histograms simply stop
 * counting. Thread-safety: any thread; other threads see the change
 * promptly (not synchronously). Since: 0.1. */
WFLO_EXTERN void wflo_metrics_enable(bool on);

/* Returns whether metrics are being recorded. Thread-safety: any thread.
 * Since: 0.1. */
WFLO_EXTERN bool wflo_metrics_enabled(void);

/* Receives a chunk of the exposition. Return 0 to continue, or a negative
 * code to stop: wflo_metrics_write_prometheus() then returns that code. */
typedef int (*wflo_metrics_write_fn)(const char *buf, size_t len, void *ud);

/* Renders every metric in the Prometheus text exposition format 0.0.4
 * (# HELP, # TYPE, escaped label values, histograms as cumulative _bucket
 * series with le="...", then _sum and _count) and passes it to write in
 * chunks of at most a few KiB, in order. Families without series are left
 * out. Label values that are not valid UTF-8 have each bad byte replaced by
 * U+FFFD. Numbers are locale-independent; non-finite values are written
 * NaN, +Inf, -Inf.
 * Returns: 0; WFLO_E_INVAL (write NULL); WFLO_E_NOMEM; or the negative code
 * write returned. Callback: write runs on the calling thread, inside this
 * call, with no libwflo lock held (it may call into libwflo).
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_metrics_write_prometheus(wflo_metrics_write_fn write,
                                              void *ud);

/* Returns the whole exposition (as wflo_metrics_write_prometheus) as a
 * NUL-terminated string, and its length without the NUL in *len (len may be
 * NULL). Returns NULL when out of memory.
 * Ownership: new; free it with wflo_metrics_text_free(). Thread-safety: any
 * thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN char *wflo_metrics_prometheus_text(size_t *len);

/* Frees a string returned by wflo_metrics_prometheus_text(). NULL is a
 * no-op. Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN void wflo_metrics_text_free(char *text);

/* Returns every family as JSON:
 *   {"enabled": true, "metrics": {"<family name>": {"type": "counter" |
 *    "gauge" | "histogram", "help": "...", "labels": ["name", ...],
 *    "series": [SERIES, ...]}, ...}}
 * A counter or gauge SERIES is {"labels": {"name": "db", ...}, "value": N}
 * (integers for counts, reals for USD and gauges, null for non-finite); a
 * histogram SERIES is {"labels": {...}, "buckets": [{"le": 0.01, "count":
 * N}, ..., {"le": null, "count": N}], "sum": S, "count": N} with cumulative
 * counts and le null for +Inf. Every family is listed, with or without
 * series. Returns NULL when out of memory.
 * Ownership: new reference. Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN json_t *wflo_metrics_json(void);

/* Frees every series that no live libwflo object uses, and zeroes the
 * counters and histograms of the others (gauges keep their values). With no
 * libwflo object alive, metrics then hold no memory (see
 * wflo_set_allocator). Does not change whether metrics are enabled.
 * Thread-safety: call it while no other thread uses libwflo (tests,
 * shutdown). Since: 0.1. */
WFLO_EXTERN void wflo_metrics_reset(void);

/* Starts an HTTP/1.1 listener on host:port on loop, answering
 *   GET /metrics   200, the Prometheus text exposition
 *   GET /healthz   200 when wflo_health_ok(), else 503; wflo_health_json()
 *   HEAD           the same status and headers, no body
 * and refusing anything else: 404 for another path, 405 for another method
 * (with Allow: GET, HEAD), 400 for a malformed request, 431 for a request
 * head larger than WFLO_METRICS_MAX_REQUEST. Every response carries
 * Connection: close; the query string is ignored. The listener never blocks
 * the loop. host: an IPv4 or IPv6 literal ("127.0.0.1", "::1", "0.0.0.0").
 * port: 0 picks a free port (see wflo_metrics_server_port).
 * Returns: 0; WFLO_E_INVAL (NULL argument, bad address or port outside
 * 0..65535); WFLO_E_NOMEM; a UV_E* code from bind or listen (UV_EADDRINUSE).
 * After a UV_E* failure the socket is being closed: run the loop once more
 * before uv_loop_close().
 * Ownership: *out belongs to the caller until wflo_metrics_server_close().
 * Thread-safety: the loop's thread only. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_metrics_serve(uv_loop_t *loop,
                                                  const char *host, int port,
                                                  wflo_metrics_server_t **out);

/* Returns the port the listener is bound to, or a negative UV_E* code.
 * Thread-safety: the loop's thread only. Since: 0.1. */
WFLO_EXTERN int wflo_metrics_server_port(const wflo_metrics_server_t *s);

/* Stops the listener: closes the listening socket and every open connection
 * (responses being written are dropped) and frees the server once every
 * handle has closed, then calls cb(ud) (cb may be NULL). After that, the
 * listener holds nothing on the loop: uv_run() returns and uv_loop_close()
 * succeeds.
 * Returns: 0; WFLO_E_INVAL (s NULL); WFLO_E_STATE (already closing).
 * Callback: once, on the loop's thread, never inside this call. s must not
 * be used once this returns 0. Thread-safety: the loop's thread only.
 * Since: 0.1. */
WFLO_EXTERN int wflo_metrics_server_close(wflo_metrics_server_t *s,
                                          void (*cb)(void *ud), void *ud);

#ifdef __cplusplus
}
#endif

#endif /* WFLO_METRICS_H */
