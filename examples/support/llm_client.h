/* llm_client: an OpenAI-compatible chat-completions client on libcurl's multi
 * interface, driven by a caller's libuv loop.
 *
 * Example code: copy it into your project and adapt it. It is not part of
 * libwflo's API; it only borrows libwflo's error codes from <wflo.h>, so its
 * results plug straight into wflo_call_done_hint(), wflo_breaker_record() and
 * wflo_llm_commit().
 *
 * How it runs: curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION,
 * one uv_poll_t per socket) and when to wake it (CURLMOPT_TIMERFUNCTION, one
 * uv_timer_t); the uv callbacks hand control back to curl through
 * curl_multi_socket_action(). Nothing blocks and we start no thread (curl's
 * threaded resolver may run one of its own).
 *
 * Threads: a client and its requests belong to the loop's thread. Every
 * function below must be called on that thread.
 *
 * Callback contract (the same as libwflo's): llm_client_chat() returning
 * non-zero never runs the callback; returning 0 runs it exactly once, on the
 * loop thread, never from inside llm_client_chat(). Cancel and close deliver
 * WFLO_E_CANCELED, also later, never from inside the cancel/close call.
 *
 * Error mapping (llm_map_error(), the one place it is decided). "Retryable"
 * means libwflo's default retry policy retries it: every code except
 * libwflo's verdicts (WFLO_E_INVAL, WFLO_E_CANCELED, ...).
 *   HTTP 2xx, body parsed .......... 0
 *   HTTP 2xx, body not a completion  WFLO_E_PARSE         retryable (note)
 *   HTTP 429 ....................... WFLO_E_RATE_LIMITED  retryable; the
 *                                    Retry-After header is in retry_after_s
 *   HTTP 408 ....................... UV_ETIMEDOUT         retryable
 *   HTTP 5xx ....................... UV_EAI_AGAIN         retryable
 *                                    ("temporary failure"; the status tells
 *                                    which one)
 *   other HTTP 4xx (400, 401, 404..) WFLO_E_INVAL         NOT retryable: the
 *                                    same request would fail again
 *   curl timeout (connect or total)  UV_ETIMEDOUT         retryable. Not
 *                                    WFLO_E_TIMEOUT, so an attempt's timeout
 *                                    stays distinct from a retry's overall
 *                                    deadline.
 *   connection refused ............. UV_ECONNREFUSED      retryable
 *   connection closed or reset with
 *   no (complete) response ......... UV_ECONNRESET        retryable
 *   host name not resolved ......... UV_EAI_NONAME        retryable
 *   bad URL or unsupported scheme .. WFLO_E_INVAL         NOT retryable
 *   out of memory .................. WFLO_E_NOMEM         NOT retryable
 *   canceled (cancel or close) ..... WFLO_E_CANCELED      NOT retryable
 *   any other curl error ........... UV_EPROTO            retryable
 * Note on WFLO_E_PARSE: libwflo's default policy retries it (it is not a
 * verdict). A provider that sent a broken body once may send a good one next
 * time; list the codes you want retried in the policy if you disagree.
 * Every failure reports prompt_tokens = completion_tokens = 0: nothing is
 * charged for an answer we could not read.
 */
#ifndef LLM_CLIENT_H
#define LLM_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <uv.h>

#include <wflo.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct llm_client_s llm_client_t;
typedef struct llm_request_s llm_request_t;

/* Largest response body accepted; a longer one fails with WFLO_E_PARSE. */
#define LLM_MAX_RESPONSE_BYTES ((size_t)8 << 20)

typedef struct llm_client_config {
  /* "https://api.openai.com/v1" or "http://127.0.0.1:8080/v1": the client
   * posts to base_url + "/chat/completions". Copied. Required. */
  const char *base_url;
  /* Sent as "Authorization: Bearer <api_key>"; NULL or "" sends none. */
  const char *api_key;
  const char *model;       /* copied; required */
  long timeout_ms;         /* whole request; 0 = no limit */
  long connect_timeout_ms; /* TCP/TLS connect; 0 = curl's default (300 s) */
} llm_client_config_t;

/* What one request produced. Valid only during the callback: copy what you
 * keep. */
typedef struct llm_result {
  int err;          /* 0 or a negative code (table above) */
  long http_status; /* 0 when no HTTP response arrived */
  /* Retry-After in seconds, >= 0 (delta-seconds or HTTP-date; OpenAI's
   * retry-after-ms wins when both are sent); NAN when absent. */
  double retry_after_s;
  uint64_t prompt_tokens;     /* usage.prompt_tokens; 0 on any failure */
  uint64_t completion_tokens; /* usage.completion_tokens; 0 on failure */
  /* The assistant's message; NULL on failure or when the provider sent
   * null content. */
  const char *text;
  size_t text_len;
  /* A human-readable reason on failure (the provider's error.message or
   * curl's message); "" on success; never NULL. */
  const char *detail;
  /* The parsed response body (borrowed); NULL when there is none. */
  const json_t *response;
} llm_result_t;

typedef void (*llm_result_cb)(const llm_result_t *res, void *ud);

/* Creates a client on loop. The first call also runs curl_global_init()
 * once per process; call curl_global_cleanup() at exit if you want curl's
 * global memory back, after every client is closed.
 * Returns: 0; WFLO_E_INVAL (NULL argument, no base_url or model, negative
 * timeout); WFLO_E_NOMEM; UV_E* from uv_timer_init.
 * Ownership: *out is the caller's until llm_client_close(). */
int llm_client_new(uv_loop_t *loop, const llm_client_config_t *cfg,
                   llm_client_t **out);

/* Builds [{"role": "user", "content": prompt}] into *out (a new reference).
 * Returns: 0; WFLO_E_INVAL (prompt not valid UTF-8); WFLO_E_NOMEM. */
int llm_user_messages(const char *prompt, json_t **out);

/* Sends {"model", "messages": [{"role": "user", "content": prompt}]}.
 * out (may be NULL) receives the request for llm_request_cancel(); it is
 * valid until its callback starts.
 * Returns: 0 (cb will run once); WFLO_E_INVAL (NULL argument, prompt not
 * valid UTF-8, messages not an array); WFLO_E_STATE
 * (client closing); WFLO_E_NOMEM. */
int llm_client_chat(llm_client_t *c, const char *prompt, llm_result_cb cb,
                    void *ud, llm_request_t **out);

/* The same with a whole conversation: messages is a JSON array of
 * {"role", "content"} objects (borrowed; serialized before returning). */
int llm_client_chat_messages(llm_client_t *c, const json_t *messages,
                             llm_result_cb cb, void *ud, llm_request_t **out);

/* Cancels a pending request: its callback runs later with WFLO_E_CANCELED
 * (unless it had already finished and waits for delivery: then it keeps its
 * result). Returns: 0; WFLO_E_INVAL for NULL; WFLO_E_STATE when the request
 * was already canceled. Calling it after the callback started is a
 * use-after-free, as with libuv requests. */
int llm_request_cancel(llm_request_t *req);

/* Closes the client: cancels every pending request (their callbacks run with
 * WFLO_E_CANCELED), closes every uv handle, and frees the client once the
 * last close callback ran; then closed(ud) runs (closed may be NULL). After
 * it, uv_loop_close() can succeed. May be called from inside a result
 * callback. Returns: 0; WFLO_E_INVAL for NULL; WFLO_E_STATE if already
 * closing. */
int llm_client_close(llm_client_t *c, void (*closed)(void *ud), void *ud);

/* The error mapping of the table above, for a finished transfer: cc is
 * curl's result, status the HTTP status (0 if none). A 2xx with CURLE_OK
 * maps to 0: body parsing may still turn it into WFLO_E_PARSE. */
int llm_map_error(CURLcode cc, long status);

/* Parses a Retry-After value: delta-seconds ("120") or an HTTP-date. Returns
 * seconds >= 0 (a date in the past gives 0), or NAN when value is not one of
 * them. now is the current Unix time, for the date form. */
double llm_parse_retry_after(const char *value, time_t now);

#ifdef __cplusplus
}
#endif
#endif /* LLM_CLIENT_H */
