/* fake_llm: a fake OpenAI-compatible chat-completions server on libuv, for
 * tests and examples. It listens on 127.0.0.1 on an ephemeral port, speaks
 * just enough HTTP/1.1 (request line, headers, Content-Length body,
 * keep-alive, "Expect: 100-continue"; requests above FAKE_LLM_MAX_REQUEST
 * bytes get 413), and answers POST .../chat/completions with
 *   {"id", "object": "chat.completion", "model",
 *    "choices": [{"index": 0, "message": {"role": "assistant",
 *                 "content": "fake answer to: <last message>"},
 *                 "finish_reason": "stop"}],
 *    "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}
 * unless a fault script says otherwise (fake_llm_fail_next).
 *
 * Two modes:
 * - fake_llm_start(loop): the server runs on the caller's loop; every call
 *   below then belongs to that loop's thread. Its handles are unreferenced:
 *   the server alone never keeps uv_run() going, so a test's uv_run()
 *   returns once the client has nothing left in flight.
 * - fake_llm_start_thread(): the server runs on its own loop on its own
 *   thread, so a stalled answer never blocks the client's loop; the getters
 *   and setters may then be called from any thread (a mutex guards them).
 * Uses only libuv, jansson and libc (no libwflo), so examples can embed it.
 */
#ifndef FAKE_LLM_H
#define FAKE_LLM_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fake_llm_s fake_llm_t;

/* Largest request (headers and body) the server accepts. */
#define FAKE_LLM_MAX_REQUEST (64 * 1024)

/* How a request is answered, and the index of its counter. */
typedef enum fake_llm_kind {
  FAKE_LLM_OK = 0, /* 200 with a completion and usage */
  FAKE_LLM_500,    /* 500 with {"error": {"message"}} */
  FAKE_LLM_429,    /* 429 with "Retry-After: S" when S >= 0 */
  /* Read the request, never answer: the connection stays open until the
   * client gives up. */
  FAKE_LLM_STALL,
  FAKE_LLM_CLOSE,     /* close the connection without answering */
  FAKE_LLM_MALFORMED, /* 200 whose body is truncated JSON */
  FAKE_LLM_400,       /* 400 with {"error": {"message"}} */
  FAKE_LLM_NO_USAGE,  /* 200, a completion without "usage" */
  /* Counter only: requests the server itself refused (wrong method or
   * path, body not a chat request, too large): 400/404/405/413. */
  FAKE_LLM_REJECTED,
  FAKE_LLM_KINDS,
  FAKE_LLM_ANY = FAKE_LLM_KINDS /* fake_llm_requests(): the total */
} fake_llm_kind_t;

/* Starts a server on loop. Returns 0 or a UV_E* code (nothing left open on
 * failure). The caller must fake_llm_close() it before uv_loop_close(). */
int fake_llm_start(uv_loop_t *loop, fake_llm_t **out);

/* Starts a server on its own loop and thread; returns once it listens.
 * Returns 0 or a UV_E* code. */
int fake_llm_start_thread(fake_llm_t **out);

/* The TCP port it listens on (127.0.0.1). */
int fake_llm_port(const fake_llm_t *f);

/* Appends "answer the next n requests with kind" to the fault script; steps
 * run in order, then requests are answered FAKE_LLM_OK again. retry_after_s
 * is used by FAKE_LLM_429 (negative: no Retry-After header).
 * Returns 0; UV_EINVAL for n == 0 or a kind that is not an answer; UV_ENOBUFS
 * when the script already holds 32 steps. */
int fake_llm_fail_next(fake_llm_t *f, unsigned n, fake_llm_kind_t kind,
                       int retry_after_s);

/* fake_llm_fail_next() with a millisecond Retry-After, for tests that must
 * not wait whole seconds: FAKE_LLM_429 then sends OpenAI's
 * "retry-after-ms: MS" and "Retry-After: S" with S = MS rounded up to whole
 * seconds (negative MS: neither header). Returns: as fake_llm_fail_next(). */
int fake_llm_fail_next_ms(fake_llm_t *f, unsigned n, fake_llm_kind_t kind,
                          int retry_after_ms);

/* Drops the remaining fault script. */
void fake_llm_clear_faults(fake_llm_t *f);

/* Usage reported by FAKE_LLM_OK answers (default 10 prompt, 20 completion). */
void fake_llm_set_usage(fake_llm_t *f, uint64_t prompt_tokens,
                        uint64_t completion_tokens);

/* Delay before every answer (default 0). STALL and CLOSE ignore it. */
void fake_llm_set_latency(fake_llm_t *f, unsigned ms);

/* Requests answered (or stalled, or closed) with kind; FAKE_LLM_ANY: all
 * chat requests, rejected ones included. */
uint64_t fake_llm_requests(fake_llm_t *f, fake_llm_kind_t kind);

/* TCP connections accepted (shows whether the client reuses them). */
uint64_t fake_llm_connections(fake_llm_t *f);

/* Most requests in flight at once (received, not yet answered). */
unsigned fake_llm_max_inflight(fake_llm_t *f);

/* The last chat request's body (a new reference the caller decrefs; NULL if
 * none) and, when auth is not NULL, its Authorization header ("" if none). */
json_t *fake_llm_last_request(fake_llm_t *f, char *auth, size_t auth_len);

/* Closes the server and every connection, then frees it and calls cb(ud)
 * (cb may be NULL).
 * Loop mode: call on the loop thread; cb runs later, from the loop, after
 * every handle's close callback.
 * Thread mode: call from any thread but the server's; it stops the server's
 * loop, joins the thread, frees everything and calls cb(ud) before
 * returning. */
void fake_llm_close(fake_llm_t *f, void (*cb)(void *ud), void *ud);

#ifdef __cplusplus
}
#endif
#endif /* FAKE_LLM_H */
