/* llm_guarded: one guarded LLM call. An OpenAI-compatible chat request
 * (llm_client.h) wrapped in libwflo's four patterns at once:
 *
 *   retry    wflo_retry_start(): the whole call; every attempt below is one
 *            try, and a server's Retry-After replaces the backoff
 *            (wflo_call_done_hint).
 *   budget   wflo_llm_reserve(model) at the start of each attempt, in the
 *            execution context that was current when the call started;
 *            wflo_llm_commit() with the usage the provider reported when
 *            the answer arrives (0 tokens on any failure: the reservation
 *            is given back).
 *   lock     wflo_lock_acquire_async() on "llm:<provider>": bounds the
 *            requests in flight to the provider, across every guard and
 *            every execution of the process.
 *   breaker  wflo_breaker_acquire_timed() on "llm:<provider>:<model>",
 *            taken only once the lock is granted (a HALF_OPEN trial slot is
 *            never spent waiting in the lock's queue) and recorded when the
 *            HTTP answer arrives.
 *
 * Per attempt, in order: reserve -> lock -> breaker -> HTTP -> breaker
 * record -> lock release -> commit -> report to the retry. A refused step
 * ends the attempt with its code, undoing the steps before it:
 *   WFLO_E_BUDGET_EXCEEDED  budget refused: no request is sent, no retry
 *   WFLO_E_NOT_FOUND        the model has no price (load one first)
 *   WFLO_E_LOCK_TIMEOUT     no lock permit in time: retried
 *   WFLO_E_QUEUE_FULL       too many waiters: not retried
 *   WFLO_E_BREAKER_OPEN     the provider is failing: fails fast, no retry
 * and the HTTP errors of llm_client.h (429/5xx/timeouts/connection errors
 * retried, other 4xx not).
 *
 * Example code, like llm_client: copy it and adapt it. It allocates with
 * malloc (libwflo's allocator hook does not see it).
 *
 * Threads: a guard and its calls belong to the loop's thread; call every
 * function below there.
 *
 * Callback contract (libwflo's): llm_guarded_chat() returning non-zero never
 * runs the callback; returning 0 runs it exactly once, on the loop thread,
 * never from inside llm_guarded_chat(), inside the context that was current
 * when the call started. Cancel and close make it run with WFLO_E_CANCELED.
 */
#ifndef LLM_GUARDED_H
#define LLM_GUARDED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include <wflo.h>

#include "llm_client.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct llm_guarded_s llm_guarded_t;
typedef struct llm_guarded_call_s llm_guarded_call_t;

typedef struct llm_guarded_config {
  /* The HTTP client: base_url, api_key, model, timeouts. client.model is
   * also the pricing model (wflo_pricing_*) and part of the breaker's
   * name. Strings are copied. */
  llm_client_config_t client;
  /* Names the shared lock "llm:<provider>" and breaker
   * "llm:<provider>:<model>" (libwflo's registry: guards with the same
   * names share them, and the first config wins). Copied. */
  const char *provider;
  /* The retry policy of every call. Copied by value; its name and error
   * list are borrowed until the guard is closed. Its breaker must be NULL
   * (the guard's breaker is taken after the lock instead). */
  wflo_retry_policy_t retry;
  /* Used when the breaker or lock is created (see provider). */
  wflo_breaker_config_t breaker;
  wflo_lock_config_t lock;
  /* Seconds each attempt waits for a lock permit; negative: the lock's
   * configured timeout. */
  double lock_timeout_s;
} llm_guarded_config_t;

/* What one guarded call produced. Valid only during the callback. */
typedef struct llm_guarded_result {
  int err;           /* 0 or the final error (see the top of this file) */
  int attempts;      /* attempts the retry started */
  int http_requests; /* attempts that sent an HTTP request */
  long http_status;  /* the last HTTP status; 0 when none arrived */
  /* The answer; NULL when none was read. Also set when err is
   * WFLO_E_BUDGET_EXCEEDED because the answer's actual cost took the
   * spend past the budget (the answer was paid for). */
  const char *text;
  size_t text_len;
  /* Why it failed ("" on success); never NULL. */
  const char *detail;
  /* Usage read from the answers (failed attempts report none) and its
   * price at the loaded prices: what was charged to the context. */
  uint64_t prompt_tokens, completion_tokens;
  double cost_usd;
  double elapsed_s; /* from llm_guarded_chat() to the callback */
} llm_guarded_result_t;

typedef void (*llm_guarded_cb)(const llm_guarded_result_t *res, void *ud);

/* Fills c with defaults suited to LLM calls: provider "default"; retry
 * "llm_chat" with 4 retries, exponential from 0.5 s to 20 s with jitter (a
 * Retry-After above 20 s ends the call); breaker opening after 5
 * consecutive provider failures (llm_provider_failure) for 30 s; lock of 8
 * concurrent requests with up to 1024 waiters and a 60 s wait. The client
 * fields are zeroed: set base_url, model and the timeouts. */
void llm_guarded_config_init(llm_guarded_config_t *c);

/* The breaker predicate of the defaults: true (a provider failure) for
 * 5xx, timeouts and connection errors; false (neutral) for 429 (the retry
 * honours its Retry-After), 4xx and malformed answers (not an outage),
 * cancels, and libwflo's own refusals. */
bool llm_provider_failure(int err, void *ud);

/* Creates a guard on loop: its HTTP client, and references on the shared
 * breaker and lock. Returns: 0; WFLO_E_INVAL (NULL argument, no provider,
 * retry.breaker set, an invalid config); WFLO_E_NOMEM; what
 * llm_client_new() returns. Ownership: *out until llm_guarded_close(). */
int llm_guarded_new(uv_loop_t *loop, const llm_guarded_config_t *cfg,
                    llm_guarded_t **out);

/* Starts one guarded call with a single user message. The call runs in
 * the context current now (enter the execution's context first, e.g. with
 * WFLO_WITH_CONTEXT): its reservations, spend and ledger records go there.
 * out (may be NULL) receives the call for llm_guarded_cancel(); it is valid
 * until the callback returns. Returns: 0 (cb will run once); WFLO_E_INVAL
 * (NULL argument, prompt not valid UTF-8); WFLO_E_STATE (guard closing);
 * WFLO_E_NOMEM; a UV_E* code from wflo_retry_start(). */
int llm_guarded_chat(llm_guarded_t *g, const char *prompt, llm_guarded_cb cb,
                     void *ud, llm_guarded_call_t **out);

/* The same with a whole conversation: a JSON array of {"role", "content"}
 * objects (a reference is taken; do not modify it until the callback). */
int llm_guarded_chat_messages(llm_guarded_t *g, json_t *messages,
                              llm_guarded_cb cb, void *ud,
                              llm_guarded_call_t **out);

/* Cancels a call: its callback runs later with WFLO_E_CANCELED (a request
 * in flight is aborted, a lock wait left, a backoff cut short). Returns: 0;
 * WFLO_E_INVAL (NULL); WFLO_E_STATE (already canceled). */
int llm_guarded_cancel(llm_guarded_call_t *call);

/* Closes the guard: cancels every call (their callbacks run with
 * WFLO_E_CANCELED), closes the client, drops the breaker and lock
 * references, frees the guard, then runs closed(ud) (may be NULL), all from
 * the loop. uv_loop_close() can succeed afterwards. May be called from a
 * call's callback. Returns: 0; WFLO_E_INVAL (NULL); WFLO_E_STATE (already
 * closing). */
int llm_guarded_close(llm_guarded_t *g, void (*closed)(void *ud), void *ud);

/* The guard's breaker and lock (borrowed, valid until the guard is
 * closed), for their state and stats. */
wflo_breaker_t *llm_guarded_breaker(const llm_guarded_t *g);
wflo_lock_t *llm_guarded_lock(const llm_guarded_t *g);

#ifdef __cplusplus
}
#endif
#endif /* LLM_GUARDED_H */
