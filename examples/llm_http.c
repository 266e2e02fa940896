/* llm_http: one chat completion over real HTTP, through a libcurl client
 * driven by a libuv loop (examples/support/llm_client.c).
 *
 *   llm_http                      ask a fake server started in-process
 *   llm_http --fail 429           ... which first answers with a fault
 *                                 (500, 429, stall, close, malformed, 400)
 *   OPENAI_API_KEY=sk-... llm_http --url https://api.openai.com/v1 \
 *       --model gpt-4o-mini --prompt "Say hello in five words."
 *
 * The fake server (tests/support/fake_llm.c) runs on its own thread and
 * loop, as a remote provider would: nothing here blocks the client's loop.
 * Prints the answer and the token usage; exits 0 on success, 1 on error.
 *
 * The call below is bare. examples/llm_http_wflo.c.txt is the same call
 * wrapped in libwflo's retry, circuit breaker, resource lock and budget;
 * the places marked "libwflo:" show where each one goes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h> /* the client runs on libcurl: link it */
#include <wflo.h>

#include "fake_llm.h"
#include "llm_client.h"

typedef struct opts {
  const char *url, *model, *prompt, *fail;
  long timeout_ms;
} opts_t;

static int parse_args(int argc, char **argv, opts_t *o) {
  int i;
  char *end;
  o->url = NULL;
  o->model = NULL;
  o->prompt = "Say hello in five words.";
  o->fail = NULL;
  o->timeout_ms = 30000;
  for (i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--url") == 0) {
      o->url = argv[i + 1];
    } else if (strcmp(argv[i], "--model") == 0) {
      o->model = argv[i + 1];
    } else if (strcmp(argv[i], "--prompt") == 0) {
      o->prompt = argv[i + 1];
    } else if (strcmp(argv[i], "--fail") == 0) {
      o->fail = argv[i + 1];
    } else if (strcmp(argv[i], "--timeout-ms") == 0) {
      o->timeout_ms = strtol(argv[i + 1], &end, 10);
      if (*end != '\0' || o->timeout_ms <= 0)
        return -1;
    } else {
      return -1;
    }
  }
  return i == argc ? 0 : -1;
}

/* Maps --fail to a fault of the fake server (for the next request only). */
static int fail_kind(const char *name, fake_llm_kind_t *kind) {
  static const struct {
    const char *name;
    fake_llm_kind_t kind;
  } kinds[] = {{"500", FAKE_LLM_500},
               {"429", FAKE_LLM_429},
               {"stall", FAKE_LLM_STALL},
               {"close", FAKE_LLM_CLOSE},
               {"malformed", FAKE_LLM_MALFORMED},
               {"400", FAKE_LLM_400}};
  size_t i;
  for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
    if (strcmp(name, kinds[i].name) == 0) {
      *kind = kinds[i].kind;
      return 0;
    }
  return -1;
}

/* Runs once, on the loop thread, when the request is over. */
static void on_answer(const llm_result_t *r, void *ud) {
  int *status = ud;
  /* libwflo: here the wrapped version releases the lock permit, records
   * the result in the breaker, commits the budget reservation with
   * r->prompt_tokens / r->completion_tokens, and reports to the retry with
   * wflo_call_done_hint(call, r->err, r->retry_after_s). */
  if (r->err != 0) {
    fprintf(stderr, "error: %s (%s)", wflo_err_name(r->err),
            wflo_strerror(r->err));
    if (r->http_status != 0)
      fprintf(stderr, ", HTTP %ld", r->http_status);
    if (!isnan(r->retry_after_s))
      fprintf(stderr, ", retry after %.0f s", r->retry_after_s);
    fprintf(stderr, ": %s\n", r->detail);
    *status = 1;
    return;
  }
  printf("answer: %.*s\n", (int)r->text_len, r->text ? r->text : "");
  printf("usage: prompt_tokens=%llu completion_tokens=%llu\n",
         (unsigned long long)r->prompt_tokens,
         (unsigned long long)r->completion_tokens);
  *status = 0;
}

int main(int argc, char **argv) {
  opts_t o;
  uv_loop_t loop;
  fake_llm_t *fake = NULL;
  llm_client_t *client;
  llm_client_config_t cfg;
  fake_llm_kind_t kind = FAKE_LLM_OK;
  char url[64];
  int rc, status = 1;

  if (parse_args(argc, argv, &o) != 0 ||
      (o.fail != NULL && fail_kind(o.fail, &kind) != 0)) {
    fprintf(stderr,
            "usage: %s [--url URL] [--model NAME] [--prompt TEXT] "
            "[--timeout-ms N] [--fail 500|429|stall|close|malformed|"
            "400]\n",
            argv[0]);
    return 2;
  }
  if (uv_loop_init(&loop) != 0)
    return 1;
  if (o.url == NULL) { /* no endpoint given: bring our own */
    if ((rc = fake_llm_start_thread(&fake)) != 0) {
      fprintf(stderr, "fake server: %s\n", uv_strerror(rc));
      return 1;
    }
    if (o.fail != NULL)
      fake_llm_fail_next(fake, 1, kind, 7);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", fake_llm_port(fake));
    o.url = url;
    if (o.fail != NULL && kind == FAKE_LLM_STALL && o.timeout_ms > 1000)
      o.timeout_ms = 1000; /* do not make the stall demo wait 30 s */
    printf("fake server on %s\n", url);
  }

  memset(&cfg, 0, sizeof(cfg));
  cfg.base_url = o.url;
  cfg.api_key = getenv("OPENAI_API_KEY"); /* NULL: no Authorization header */
  cfg.model = o.model != NULL ? o.model
              : fake != NULL  ? "fake-model"
                              : "gpt-4o-mini";
  cfg.timeout_ms = o.timeout_ms;
  cfg.connect_timeout_ms = 5000;
  if ((rc = llm_client_new(&loop, &cfg, &client)) != 0) {
    fprintf(stderr, "client: %s\n", wflo_strerror(rc));
    goto close_fake;
  }

  /* libwflo: the wrapped version starts here with
   * wflo_retry_start(&loop, &policy, attempt, op, done, NULL); each attempt
   * reserves budget (wflo_llm_reserve), waits for a lock permit
   * (wflo_lock_acquire_async), takes a breaker permit
   * (wflo_breaker_acquire) and only then makes this call. */
  if ((rc = llm_client_chat(client, o.prompt, on_answer, &status, NULL)) != 0)
    fprintf(stderr, "chat: %s\n", wflo_strerror(rc));
  uv_run(&loop, UV_RUN_DEFAULT); /* returns when the answer has been handled */

  llm_client_close(client, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT); /* runs the close callbacks */
close_fake:
  if (uv_loop_close(&loop) != 0)
    status = 1;
  fake_llm_close(fake, NULL, NULL); /* NULL when --url was given */
  return status;
}
