/* llm_http: one chat completion over real HTTP, kept alive and within
 * budget by libwflo: retry with backoff that honours Retry-After, a
 * circuit breaker per provider and model, a lock bounding the requests in
 * flight to the provider, and a budget charged with the usage the provider
 * reports, inside one workflow execution.
 *
 *   llm_http        ask a fake server started in-process, scripted to fail
 *                   first (a dropped connection, a 500, a 429 with
 *                   Retry-After 0.2 s), so the output shows the retries
 *   OPENAI_API_KEY=sk-... llm_http --url https://api.openai.com/v1 \
 *       --model gpt-4o-mini --prompt "Say hello in five words."
 *
 * Options: --url, --model, --prompt, --budget USD (default 0.10),
 * --pricing FILE (prices for a model libwflo has no built-in price for:
 * {"models": {"NAME": {"input_per_mtok", "output_per_mtok",
 * "max_call_usd"}}}). Exits 0 when an answer arrived.
 *
 * The wrapping lives in examples/support/llm_guarded.c (reserve -> lock ->
 * breaker -> HTTP -> record -> release -> commit, under an async retry);
 * the HTTP client, on libcurl's multi interface driven by this libuv loop,
 * in examples/support/llm_client.c; the fake server in
 * tests/support/fake_llm.c (its own thread and loop, like a remote
 * provider).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h> /* the client runs on libcurl: link it */
#include <wflo.h>

#include "fake_llm.h"
#include "llm_guarded.h"

typedef struct opts {
  const char *url, *model, *prompt, *pricing;
  double budget;
} opts_t;

static int parse_args(int argc, char **argv, opts_t *o) {
  char *end;
  int i;
  o->url = o->model = o->pricing = NULL;
  o->prompt = "Say hello in five words.";
  o->budget = 0.10;
  for (i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--url") == 0)
      o->url = argv[i + 1];
    else if (strcmp(argv[i], "--model") == 0)
      o->model = argv[i + 1];
    else if (strcmp(argv[i], "--prompt") == 0)
      o->prompt = argv[i + 1];
    else if (strcmp(argv[i], "--pricing") == 0)
      o->pricing = argv[i + 1];
    else if (strcmp(argv[i], "--budget") == 0) {
      o->budget = strtod(argv[i + 1], &end);
      if (*end != '\0' || !(o->budget >= 0))
        return -1;
    } else
      return -1;
  }
  return i == argc ? 0 : -1;
}

/* Prices of the fake server's model, USD per million tokens; max_call_usd
 * is what each attempt reserves from the budget before it is sent. */
static int load_fake_prices(void) {
  char err[256];
  json_t *p = json_pack("{s:{s:{s:f, s:f, s:f}}}", "models", "fake-model",
                        "input_per_mtok", 2.5, "output_per_mtok", 10.0,
                        "max_call_usd", 0.01);
  int rc = wflo_pricing_load_json(p, err, sizeof(err));
  json_decref(p);
  if (rc != 0)
    fprintf(stderr, "pricing: %s\n", err);
  return rc;
}

/* Called by the retry before each wait. */
static void print_retry(int attempt, int err, double delay, void *ud) {
  (void)ud;
  printf("  retry %d after %s (%s), waiting %.2f s\n", attempt,
         wflo_err_name(err), wflo_strerror(err), delay);
}

/* Runs once, on the loop thread, inside the execution's context. */
static void on_answer(const llm_guarded_result_t *r, void *ud) {
  int *result = ud;
  *result = r->err;
  if (r->err == 0)
    printf("answer: %.*s\n", (int)r->text_len, r->text);
  else
    printf("failed: %s: %s\n", wflo_err_name(r->err), r->detail);
  printf("attempts: %d (%d HTTP requests) in %.2f s\n", r->attempts,
         r->http_requests, r->elapsed_s);
  printf("usage: prompt_tokens=%llu completion_tokens=%llu cost=$%.6f\n",
         (unsigned long long)r->prompt_tokens,
         (unsigned long long)r->completion_tokens, r->cost_usd);
  printf("spent: $%.6f of $%.2f\n", wflo_budget_spent(wflo_context_current()),
         wflo_get_current_budget());
}

int main(int argc, char **argv) {
  opts_t o;
  uv_loop_t loop;
  fake_llm_t *fake = NULL;
  llm_guarded_config_t cfg;
  llm_guarded_t *guard = NULL;
  wflo_workflow_t *wf = NULL;
  wflo_context_t *ctx = NULL;
  char url[64], err[256];
  int rc, result = WFLO_E_STATE;

  if (parse_args(argc, argv, &o) != 0) {
    fprintf(stderr,
            "usage: %s [--url URL] [--model NAME] [--prompt TEXT] "
            "[--budget USD] [--pricing FILE]\n",
            argv[0]);
    return 2;
  }
  wflo_set_log_level(WFLO_LOG_OFF); /* events: see wflo_set_event_handler */
  if (uv_loop_init(&loop) != 0)
    return 1;

  llm_guarded_config_init(&cfg); /* LLM-friendly retry, breaker, lock */
  cfg.retry.on_retry = print_retry;
  cfg.client.api_key = getenv("OPENAI_API_KEY"); /* NULL: no header */
  cfg.client.timeout_ms = 60000;
  cfg.client.connect_timeout_ms = 10000;
  if (o.url == NULL) {
    /* No endpoint given: bring our own, and make it misbehave. */
    if ((rc = fake_llm_start_thread(&fake)) != 0) {
      fprintf(stderr, "fake server: %s\n", uv_strerror(rc));
      return 1;
    }
    /* The close comes first, on a fresh connection: curl silently resends
     * a request whose reused keep-alive connection was closed. */
    fake_llm_fail_next(fake, 1, FAKE_LLM_CLOSE, -1);
    fake_llm_fail_next(fake, 1, FAKE_LLM_500, -1);
    fake_llm_fail_next_ms(fake, 1, FAKE_LLM_429, 200);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", fake_llm_port(fake));
    printf("fake server on %s: a dropped connection, a 500, a 429 with "
           "Retry-After 0.2 s, then an answer\n",
           url);
    o.url = url;
    o.model = "fake-model";
    cfg.provider = "fake";
    cfg.retry.base_delay = 0.05; /* a quick demo */
    cfg.client.timeout_ms = 5000;
    if (load_fake_prices() != 0)
      goto close_fake;
  } else {
    cfg.provider = "openai";
  }
  if (o.pricing != NULL &&
      wflo_pricing_load_file(o.pricing, err, sizeof(err)) != 0) {
    fprintf(stderr, "pricing: %s\n", err);
    goto reset_prices;
  }
  cfg.client.base_url = o.url;
  cfg.client.model = o.model != NULL ? o.model : "gpt-4o-mini";

  /* One guard per provider and model: its HTTP client, the breaker
   * "llm:<provider>:<model>" and the lock "llm:<provider>". */
  if ((rc = llm_guarded_new(&loop, &cfg, &guard)) != 0) {
    fprintf(stderr, "guard: %s\n", wflo_strerror(rc));
    goto reset_prices;
  }

  /* One execution of a workflow, with its budget: the call below runs in
   * its context, so every attempt reserves from it and the answer's usage
   * is charged to it. */
  if (wflo_workflow_new("llm_http", o.budget, &wf) != 0 ||
      wflo_workflow_begin(wf, &ctx) != 0) {
    fprintf(stderr, "workflow: invalid budget or out of memory\n");
    goto close_guard;
  }
  WFLO_WITH_CONTEXT(ctx) {
    rc = llm_guarded_chat(guard, o.prompt, on_answer, &result, NULL);
  }
  if (rc != 0)
    fprintf(stderr, "chat: %s\n", wflo_strerror(rc));
  uv_run(&loop, UV_RUN_DEFAULT); /* returns once on_answer has run */
  printf(
      "breaker %s: %s\n", cfg.provider,
      wflo_breaker_state_name(wflo_breaker_state(llm_guarded_breaker(guard))));
  wflo_workflow_end(wf, ctx, result); /* counted in the workflow's stats */

close_guard:
  wflo_workflow_put(wf);
  llm_guarded_close(guard, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT); /* runs the close callbacks */
reset_prices:
  wflo_pricing_reset();
close_fake:
  if (uv_loop_close(&loop) != 0) /* nothing left open on the loop */
    result = WFLO_E_STATE;
  fake_llm_close(fake, NULL, NULL); /* NULL when --url was given */
  curl_global_cleanup();
  return result == 0 ? 0 : 1;
}
