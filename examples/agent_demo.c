/* wflo-demo: libwflo keeping an agent workflow alive and within budget while
 * its LLM provider misbehaves.
 *
 * Twenty workflow executions run on one libuv loop. Each is a short agent:
 * plan, a few tool/summary steps, answer: every step one LLM call. Every call
 * goes through all of libwflo's patterns at once:
 *
 *   budget   wflo_llm_reserve() before the call, wflo_llm_commit() after it,
 *            so an execution can never spend past its budget;
 *   retry    wflo_retry_start() with jittered exponential backoff that
 *            honours the provider's Retry-After (wflo_call_done_hint);
 *   lock     wflo_lock_acquire_async() bounds the calls in flight to the
 *            provider (a bulkhead) and reports contention;
 *   breaker  one circuit breaker per provider and model fails fast during
 *            the outage and lets a trial call through to detect recovery.
 *
 * The provider is simulated in-process on the same loop (no network):
 * log-normal latency, transient 500s, 429s with Retry-After, and an outage
 * in the middle of the run. With --url it is a real OpenAI-compatible
 * endpoint instead, called through examples/support/llm_client (libcurl's
 * multi interface on the same loop). The run checks itself and exits
 * non-zero when an invariant does not hold. `wflo-demo --help` lists the
 * flags. */
#include <wflo.h>

#include "llm_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIM_MODEL "sim-gpt"
#define MAX_STEPS 16

/* --- options ------------------------------------------------------------- */

typedef struct options {
  uint64_t seed;
  int executions;
  double fail_rate;                /* transient 500s */
  double rate_limit_rate;          /* 429 with Retry-After */
  double outage_start, outage_len; /* seconds from start; len 0 = none */
  int concurrency;
  double budget;       /* USD per "research" execution */
  double small_budget; /* USD per "deep-dive" execution */
  bool json;
  bool quiet;
  const char *url;   /* a real OpenAI-compatible endpoint, or NULL */
  const char *model; /* with --url */
  int metrics_port;  /* -1: no /metrics listener */
} options_t;

static void usage(FILE *f) {
  fprintf(f,
          "usage: wflo-demo [options]\n"
          "  --seed N            random seed (default 1)\n"
          "  --executions N      workflow executions (default 20)\n"
          "  --fail-rate F       share of calls answered 500 (default 0.08)\n"
          "  --rate-limit F      share of calls answered 429 (default 0.05)\n"
          "  --outage S:LEN      provider outage from S for LEN seconds\n"
          "                      (default 1.0:1.5; 0:0 for none)\n"
          "  --concurrency N     calls in flight to the provider (default 4)\n"
          "  --budget USD        budget of a research execution (0.05)\n"
          "  --small-budget USD  budget of a deep-dive execution (0.04)\n"
          "  --json              print the report as one JSON document\n"
          "  --quiet             no progress line\n"
          "  --url URL           call a real OpenAI-compatible endpoint\n"
          "                      (base URL; key from OPENAI_API_KEY) instead\n"
          "                      of the simulated provider; no outage\n"
          "  --model NAME        the model for --url (default gpt-4o-mini)\n"
          "  --metrics-port N    serve Prometheus /metrics on 127.0.0.1:N\n"
          "                      while the demo runs (0: any free port)\n");
}

static int parse_double(const char *s, double lo, double hi, double *out) {
  char *end;
  double v;
  errno = 0;
  v = strtod(s, &end);
  if (errno != 0 || *end != '\0' || !(v >= lo && v <= hi))
    return -1;
  *out = v;
  return 0;
}

static int parse_options(int argc, char **argv, options_t *o) {
  int i;
  double v;
  o->seed = 1;
  o->executions = 20;
  o->fail_rate = 0.08;
  o->rate_limit_rate = 0.05;
  o->outage_start = 1.0;
  o->outage_len = 1.5;
  o->concurrency = 4;
  o->budget = 0.05;
  o->small_budget = 0.04;
  o->json = false;
  o->quiet = false;
  o->url = NULL;
  o->model = "gpt-4o-mini";
  o->metrics_port = -1;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--json") == 0) {
      o->json = true;
      continue;
    }
    if (strcmp(a, "--quiet") == 0) {
      o->quiet = true;
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    }
    if (val == NULL)
      goto bad;
    i++;
    if (strcmp(a, "--seed") == 0 && parse_double(val, 0, 1e18, &v) == 0)
      o->seed = (uint64_t)v;
    else if (strcmp(a, "--executions") == 0 &&
             parse_double(val, 1, 10000, &v) == 0)
      o->executions = (int)v;
    else if (strcmp(a, "--fail-rate") == 0 &&
             parse_double(val, 0, 1, &o->fail_rate) == 0)
      ;
    else if (strcmp(a, "--rate-limit") == 0 &&
             parse_double(val, 0, 1, &o->rate_limit_rate) == 0)
      ;
    else if (strcmp(a, "--concurrency") == 0 &&
             parse_double(val, 1, 1000, &v) == 0)
      o->concurrency = (int)v;
    else if (strcmp(a, "--budget") == 0 &&
             parse_double(val, 0, 1000, &o->budget) == 0)
      ;
    else if (strcmp(a, "--small-budget") == 0 &&
             parse_double(val, 0, 1000, &o->small_budget) == 0)
      ;
    else if (strcmp(a, "--url") == 0)
      o->url = val;
    else if (strcmp(a, "--model") == 0)
      o->model = val;
    else if (strcmp(a, "--metrics-port") == 0 &&
             parse_double(val, 0, 65535, &v) == 0)
      o->metrics_port = (int)v;
    else if (strcmp(a, "--outage") == 0 &&
             sscanf(val, "%lf:%lf", &o->outage_start, &o->outage_len) == 2 &&
             o->outage_start >= 0 && o->outage_len >= 0 &&
             o->outage_start + o->outage_len < 60)
      ;
    else
      goto bad;
  }
  if (o->url != NULL)
    o->outage_len = 0; /* a real provider has its own outages */
  return 0;
bad:
  fprintf(stderr, "wflo-demo: bad or incomplete option near '%s'\n", argv[i]);
  usage(stderr);
  return -1;
}

/* --- the demo's own randomness (the provider's behaviour) ----------------- */

static uint64_t g_rng;

static double rnd(void) { /* xorshift64*, uniform in [0, 1) */
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return (double)((g_rng * 0x2545f4914f6cdd1dull) >> 11) * 0x1.0p-53;
}

/* Log-normal latency: most calls near the median, a long slow tail. */
static double latency_s(void) {
  double u1 = rnd() + 1e-12, u2 = rnd();
  double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
  double s = 0.08 * exp(0.5 * z);
  return s > 1.5 ? 1.5 : s;
}

/* --- the simulated provider ------------------------------------------------ */

typedef void (*provider_cb)(int err, double retry_after,
                            const wflo_llm_usage_t *u, void *ud);

typedef struct sim_request {
  uv_timer_t timer;
  provider_cb cb;
  void *ud;
  int err;
  double retry_after;
  wflo_llm_usage_t usage;
} sim_request_t;

typedef struct provider {
  uv_loop_t *loop;
  const options_t *opt;
  llm_client_t *http; /* --url: the real endpoint; NULL: simulated */
  uint64_t t0;
  long requests, ok, http500, http429, outage503;
} provider_t;

static double elapsed(const provider_t *p) {
  return (double)(uv_hrtime() - p->t0) / 1e9;
}

static bool in_outage(const provider_t *p) {
  double t = elapsed(p);
  return p->opt->outage_len > 0 && t >= p->opt->outage_start &&
         t < p->opt->outage_start + p->opt->outage_len;
}

static void sim_close_cb(uv_handle_t *h) { free(h->data); }

static void sim_answer(uv_timer_t *t) {
  sim_request_t *r = t->data;
  r->cb(r->err, r->retry_after, &r->usage, r->ud);
  uv_close((uv_handle_t *)&r->timer, sim_close_cb);
}

/* Decides the outcome now (the outage is judged when the request arrives)
 * and answers after the drawn latency. */
static int sim_send(provider_t *p, int step_kind, provider_cb cb, void *ud) {
  sim_request_t *r = calloc(1, sizeof(*r));
  double lat = latency_s(), x = rnd();
  if (r == NULL)
    return WFLO_E_NOMEM;
  r->cb = cb;
  r->ud = ud;
  r->retry_after = NAN;
  if (in_outage(p)) {
    r->err = UV_ECONNRESET; /* the provider is down: resets and 503s */
    p->outage503++;
    lat = 0.02;
  } else if (x < p->opt->fail_rate) {
    r->err = UV_EAI_AGAIN; /* a transient 500 */
    p->http500++;
  } else if (x < p->opt->fail_rate + p->opt->rate_limit_rate) {
    r->err = WFLO_E_RATE_LIMITED;
    r->retry_after = 0.2 + 0.3 * rnd();
    p->http429++;
    lat = 0.01;
  } else {
    r->usage.prompt_tokens = (uint64_t)(600 + 300 * step_kind + 400 * rnd());
    r->usage.completion_tokens = (uint64_t)(120 + 200 * rnd());
    p->ok++;
  }
  uv_timer_init(p->loop, &r->timer);
  r->timer.data = r;
  uv_timer_start(&r->timer, sim_answer, (uint64_t)(lat * 1e3), 0);
  return 0;
}

/* --url: one chat completion through the libcurl client on the same loop;
 * its result already carries a libwflo-style code, Retry-After and usage. */
typedef struct http_call {
  provider_t *p;
  provider_cb cb;
  void *ud;
} http_call_t;

static void on_http(const llm_result_t *res, void *ud) {
  http_call_t *hc = ud;
  wflo_llm_usage_t u;
  memset(&u, 0, sizeof(u));
  u.prompt_tokens = res->prompt_tokens;
  u.completion_tokens = res->completion_tokens;
  if (res->err == 0)
    hc->p->ok++;
  else if (res->http_status == 429)
    hc->p->http429++;
  else if (res->http_status >= 500)
    hc->p->http500++;
  hc->cb(res->err, res->retry_after_s, &u, hc->ud);
  free(hc);
}

static const char *const step_prompts[] = {
    "Plan, in three short bullet points, how to research the question: "
    "why do distributed systems need circuit breakers?",
    "Summarize in one sentence what a circuit breaker does.",
    "Summarize in one sentence what exponential backoff with jitter does.",
    "Answer in two sentences: why do distributed systems need circuit "
    "breakers?"};

static int provider_send(provider_t *p, int step, int nsteps, provider_cb cb,
                         void *ud) {
  http_call_t *hc;
  int rc, kind = step == 0 ? 0 : step == nsteps - 1 ? 3 : 1 + step % 2;
  p->requests++;
  if (p->http == NULL)
    return sim_send(p, step == 0 ? 2 : 1, cb, ud);
  hc = malloc(sizeof(*hc));
  if (hc == NULL)
    return WFLO_E_NOMEM;
  hc->p = p;
  hc->cb = cb;
  hc->ud = ud;
  rc = llm_client_chat(p->http, step_prompts[kind], on_http, hc, NULL);
  if (rc != 0)
    free(hc);
  return rc;
}

/* --- executions ------------------------------------------------------------ */

typedef enum exec_state {
  EX_PENDING,
  EX_RUNNING,
  EX_COMPLETED,
  EX_FAILED,
  EX_REFUSED
} exec_state_t;

typedef struct demo demo_t;

typedef struct execution {
  demo_t *demo;
  int index;
  wflo_workflow_t *wf;
  wflo_context_t *ctx;
  double budget;
  int step, nsteps;
  exec_state_t state;
  int last_error;
  double spent;
  /* the step in flight */
  wflo_budget_resv_t resv;
  wflo_llm_usage_t usage;
  wflo_call_t *call;
  wflo_lock_req_t lock_req;
  wflo_breaker_permit_t permit;
  uint64_t sent_at;
  uv_timer_t start_timer;
} execution_t;

typedef struct transition {
  double at;
  const char *to; /* "open", "half_open", "closed" */
} transition_t;

struct demo {
  options_t opt;
  uv_loop_t *loop;
  provider_t provider;
  wflo_workflow_t *research, *deep_dive;
  wflo_breaker_t *breaker;
  wflo_lock_t *lock;
  wflo_retry_policy_t policy;
  const char *model;
  wflo_metrics_server_t *metrics;
  execution_t *ex;
  int started, completed, failed, refused, running;
  long retries, attempts, fast_failed;
  transition_t transitions[256];
  int ntransitions;
  uv_timer_t progress;
  bool tty;
};

static demo_t g_demo;

static void step_begin(execution_t *e);

/* The last execution ended: let go of what keeps the loop running. */
static void all_done(demo_t *d) {
  if (d->metrics != NULL) {
    wflo_metrics_server_close(d->metrics, NULL, NULL);
    d->metrics = NULL;
  }
  if (d->provider.http != NULL) {
    llm_client_close(d->provider.http, NULL, NULL);
    d->provider.http = NULL;
  }
}

static void on_event(const wflo_event_t *ev, void *ud) {
  demo_t *d = ud;
  const char *to = NULL;
  if (strcmp(ev->name, "retry_scheduled") == 0) {
    d->retries++;
    return;
  }
  if (strcmp(ev->name, "circuit_breaker_opened") == 0)
    to = "open";
  else if (strcmp(ev->name, "circuit_breaker_half_open") == 0)
    to = "half_open";
  else if (strcmp(ev->name, "circuit_breaker_closed") == 0)
    to = "closed";
  if (to != NULL && d->ntransitions < (int)(sizeof(d->transitions) /
                                            sizeof(d->transitions[0]))) {
    d->transitions[d->ntransitions].at = elapsed(&d->provider);
    d->transitions[d->ntransitions].to = to;
    d->ntransitions++;
  }
}

/* What is worth retrying: the provider's transient failures, and the
 * breaker's refusal while it is open (the backoff outlasts its recovery
 * timeout, so the retry comes back when a trial may be let through).
 * Budget refusals and invalid requests are final. */
static bool demo_retryable(int err, void *ud) {
  (void)ud;
  switch (err) {
  case WFLO_E_BUDGET_EXCEEDED:
  case WFLO_E_INVAL:
  case WFLO_E_NOMEM:
  case WFLO_E_CANCELED:
    return false;
  default:
    return err < 0;
  }
}

static void execution_end(execution_t *e, exec_state_t st, int err) {
  demo_t *d = e->demo;
  e->state = st;
  e->last_error = err;
  e->spent = wflo_budget_spent(e->ctx);
  d->running--;
  if (st == EX_COMPLETED)
    d->completed++;
  else if (st == EX_FAILED)
    d->failed++;
  else
    d->refused++;
  wflo_workflow_end(e->wf, e->ctx, st == EX_COMPLETED ? 0 : err);
  e->ctx = NULL;
  if (d->completed + d->failed + d->refused == d->opt.executions)
    all_done(d);
}

/* The provider answered an attempt: report to the breaker, free the
 * provider slot, then tell the retry (with the server's Retry-After). */
static void on_provider(int err, double retry_after, const wflo_llm_usage_t *u,
                        void *ud) {
  execution_t *e = ud;
  double dur = (double)(uv_hrtime() - e->sent_at) / 1e9;
  wflo_breaker_record(e->demo->breaker, &e->permit, err, dur);
  wflo_lock_release(&e->lock_req.permit);
  if (err == 0)
    e->usage = *u;
  wflo_call_done_hint(e->call, err, retry_after);
}

static void on_lock(wflo_lock_req_t *req, int status) {
  execution_t *e = req->data;
  int rc;
  if (status != 0) {
    wflo_call_done(e->call, status);
    return;
  }
  rc = wflo_breaker_acquire(e->demo->breaker, &e->permit);
  if (rc != 0) { /* open: fail fast, no request sent */
    e->demo->fast_failed++;
    wflo_lock_release(&req->permit);
    wflo_call_done(e->call, rc);
    return;
  }
  e->sent_at = uv_hrtime();
  rc = provider_send(&e->demo->provider, e->step, e->nsteps, on_provider, e);
  if (rc != 0) {
    wflo_breaker_record(e->demo->breaker, &e->permit, rc, -1);
    wflo_lock_release(&req->permit);
    wflo_call_done(e->call, rc);
  }
}

/* One attempt of a step: wait for a provider slot, then call. */
static void attempt_start(wflo_call_t *call, void *arg) {
  execution_t *e = arg;
  int rc;
  e->call = call;
  e->demo->attempts++;
  e->lock_req.data = e;
  rc = wflo_lock_acquire_async(e->demo->loop, e->demo->lock, &e->lock_req,
                               NULL, -1, on_lock);
  if (rc != 0)
    wflo_call_done(call, rc);
}

static void step_done(int err, void *arg) {
  execution_t *e = arg;
  int rc = wflo_llm_commit(&e->resv, e->demo->model, &e->usage);
  if (rc == WFLO_E_BUDGET_EXCEEDED) {
    execution_end(e, EX_REFUSED, rc);
    return;
  }
  if (err != 0) {
    execution_end(e, EX_FAILED, err);
    return;
  }
  if (++e->step == e->nsteps) {
    execution_end(e, EX_COMPLETED, 0);
    return;
  }
  step_begin(e);
}

/* Reserve the step's worst case in the execution's budget, then start its
 * retry inside the execution's context (the retry carries it to every
 * callback). */
static void step_begin(execution_t *e) {
  int rc;
  memset(&e->usage, 0, sizeof(e->usage));
  wflo_context_enter(e->ctx);
  rc = wflo_llm_reserve(e->demo->model, &e->resv);
  if (rc == 0) {
    rc = wflo_retry_start(e->demo->loop, &e->demo->policy, attempt_start, e,
                          step_done, NULL);
    if (rc != 0)
      wflo_budget_commit(&e->resv, 0); /* abandon the reservation */
  }
  wflo_context_exit(e->ctx);
  if (rc == WFLO_E_BUDGET_EXCEEDED)
    execution_end(e, EX_REFUSED, rc);
  else if (rc != 0)
    execution_end(e, EX_FAILED, rc);
}

static void execution_start(uv_timer_t *t) {
  execution_t *e = t->data;
  int rc = wflo_workflow_begin(e->wf, &e->ctx);
  e->demo->started++;
  e->demo->running++;
  uv_close((uv_handle_t *)t, NULL);
  if (rc != 0) {
    e->demo->running--;
    e->demo->failed++;
    e->state = EX_FAILED;
    e->last_error = rc;
    return;
  }
  e->budget = wflo_budget_remaining(e->ctx);
  e->state = EX_RUNNING;
  step_begin(e);
}

/* --- progress and report ------------------------------------------------ */

static const char *breaker_state_name(wflo_breaker_t *b) {
  switch (wflo_breaker_state(b)) {
  case WFLO_BREAKER_OPEN:
    return "open";
  case WFLO_BREAKER_HALF_OPEN:
    return "half_open";
  default:
    return "closed";
  }
}

static void on_progress(uv_timer_t *t) {
  demo_t *d = t->data;
  int done = d->completed + d->failed + d->refused;
  if (d->tty)
    fprintf(stderr,
            "\r[%5.1fs] %d/%d done  running %d  retries %ld  breaker %-9s "
            "outage %s ",
            elapsed(&d->provider), done, d->opt.executions, d->running,
            d->retries, breaker_state_name(d->breaker),
            in_outage(&d->provider) ? "yes" : "no ");
  else
    fprintf(stderr,
            "[%5.1fs] %d/%d done, %d running, %ld retries, breaker %s\n",
            elapsed(&d->provider), done, d->opt.executions, d->running,
            d->retries, breaker_state_name(d->breaker));
  if (done == d->opt.executions) {
    if (d->tty)
      fputc('\n', stderr);
    uv_close((uv_handle_t *)t, NULL);
  }
}

/* --- report and self-check ------------------------------------------------ */

static json_t *report_json(demo_t *d) {
  json_t *r = json_object(), *execs = json_array(), *trans = json_array();
  json_t *wfs = json_object();
  double total = 0;
  int i;
  for (i = 0; i < d->opt.executions; i++) {
    execution_t *e = &d->ex[i];
    static const char *const names[] = {"pending", "running", "completed",
                                        "failed", "refused"};
    total += e->spent;
    json_array_append_new(
        execs,
        json_pack("{s:i, s:s, s:s, s:i, s:i, s:f, s:f, s:s}", "index", i,
                  "workflow", e->wf == d->research ? "research" : "deep-dive",
                  "state", names[e->state], "steps_done", e->step, "steps",
                  e->nsteps, "spent_usd", e->spent, "budget_usd", e->budget,
                  "error", wflo_err_name(e->last_error)));
  }
  for (i = 0; i < d->ntransitions; i++)
    json_array_append_new(trans, json_pack("{s:f, s:s}", "at_seconds",
                                           d->transitions[i].at, "to",
                                           d->transitions[i].to));
  json_object_set_new(wfs, "research", wflo_workflow_stats_json(d->research));
  json_object_set_new(wfs, "deep-dive",
                      wflo_workflow_stats_json(d->deep_dive));
  json_object_set_new(r, "seconds", json_real(elapsed(&d->provider)));
  json_object_set_new(r, "executions",
                      json_pack("{s:i, s:i, s:i, s:i}", "started", d->started,
                                "completed", d->completed, "failed", d->failed,
                                "refused_for_budget", d->refused));
  json_object_set_new(
      r, "calls",
      json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "attempts",
                (json_int_t)d->attempts, "retries", (json_int_t)d->retries,
                "failed_fast", (json_int_t)d->fast_failed, "provider_requests",
                (json_int_t)d->provider.requests, "ok",
                (json_int_t)d->provider.ok, "http_500",
                (json_int_t)d->provider.http500, "http_429",
                (json_int_t)d->provider.http429));
  json_object_set_new(r, "outage",
                      json_pack("{s:f, s:f, s:I}", "start_seconds",
                                d->opt.outage_start, "length_seconds",
                                d->opt.outage_len, "refused_requests",
                                (json_int_t)d->provider.outage503));
  json_object_set_new(r, "breaker", wflo_breaker_state_json(d->breaker));
  json_object_set_new(r, "breaker_transitions", trans);
  json_object_set_new(r, "lock", wflo_lock_stats_json(d->lock));
  json_object_set_new(r, "workflows", wfs);
  json_object_set_new(r, "spent_usd", json_real(total));
  json_object_set_new(r, "execution_details", execs);
  return r;
}

/* The run checks itself: returns NULL when every invariant holds, else the
 * reason. */
static const char *self_check(demo_t *d, json_t *report) {
  static char why[256];
  double sum = 0, wf_sum = 0;
  bool opened_in_outage = false, closed_after = false;
  double out_end = d->opt.outage_start + d->opt.outage_len;
  int i;
  if (d->completed + d->failed + d->refused != d->started ||
      d->started != d->opt.executions)
    return "not every execution is accounted for";
  for (i = 0; i < d->opt.executions; i++) {
    execution_t *e = &d->ex[i];
    if (e->spent > e->budget + 1e-12) {
      snprintf(why, sizeof(why),
               "execution %d spent %.6f USD over its budget of %.6f", i,
               e->spent, e->budget);
      return why;
    }
    sum += e->spent;
  }
  wf_sum =
      json_real_value(json_object_get(
          json_object_get(json_object_get(report, "workflows"), "research"),
          "spent_usd")) +
      json_real_value(json_object_get(
          json_object_get(json_object_get(report, "workflows"), "deep-dive"),
          "spent_usd"));
  if (fabs(wf_sum - sum) > 1e-9)
    return "workflow totals differ from the sum of the executions";
  if (d->opt.outage_len > 0) {
    for (i = 0; i < d->ntransitions; i++) {
      double at = d->transitions[i].at;
      if (strcmp(d->transitions[i].to, "open") == 0 &&
          at >= d->opt.outage_start && at <= out_end + 0.5)
        opened_in_outage = true;
      if (strcmp(d->transitions[i].to, "closed") == 0 && at >= out_end)
        closed_after = true;
    }
    if (!opened_in_outage)
      return "the breaker did not open during the outage";
    if (!closed_after)
      return "the breaker did not close after the outage";
  }
  if (wflo_breaker_state(d->breaker) != WFLO_BREAKER_CLOSED)
    return "the breaker is not closed at the end";
  return NULL;
}

static void print_summary(demo_t *d, json_t *report) {
  json_t *lock = json_object_get(report, "lock");
  int i;
  printf("\nwflo-demo: %d agent executions against a flaky LLM provider "
         "(%.1f s)\n\n",
         d->opt.executions, elapsed(&d->provider));
  printf("executions  %d completed, %d failed, %d refused for budget "
         "(of %d)\n",
         d->completed, d->failed, d->refused, d->started);
  printf("calls       %ld attempts, %ld retries, %ld failed fast at the open "
         "breaker\n",
         d->attempts, d->retries, d->fast_failed);
  printf("provider    %ld requests: %ld ok, %ld 500s, %ld 429s, %ld failed in "
         "the outage\n",
         d->provider.requests, d->provider.ok, d->provider.http500,
         d->provider.http429, d->provider.outage503);
  printf("breaker     %s:", d->opt.url != NULL ? d->opt.url : "sim-provider");
  for (i = 0; i < d->ntransitions; i++)
    printf(" %s@%.2fs", d->transitions[i].to, d->transitions[i].at);
  if (d->opt.outage_len > 0)
    printf("  (outage %.2fs-%.2fs)", d->opt.outage_start,
           d->opt.outage_start + d->opt.outage_len);
  printf("\n");
  printf(
      "lock        provider slots %lld, %lld acquisitions, %lld "
      "contended (%.0f%%), max wait %.3fs, %lld timeouts\n",
      (long long)json_integer_value(
          json_object_get(lock, "concurrent_capacity")),
      (long long)json_integer_value(
          json_object_get(lock, "total_acquisitions")),
      (long long)json_integer_value(json_object_get(lock, "contention_count")),
      100.0 * json_real_value(json_object_get(lock, "contention_rate")),
      json_real_value(json_object_get(lock, "max_wait_time_seconds")),
      (long long)json_integer_value(json_object_get(lock, "timeout_count")));
  {
    const char *names[2] = {"research", "deep-dive"};
    for (i = 0; i < 2; i++) {
      json_t *w =
          json_object_get(json_object_get(report, "workflows"), names[i]);
      double budget = i == 0 ? d->opt.budget : d->opt.small_budget;
      long long n = json_integer_value(json_object_get(w, "executions"));
      printf("%-11s %lld executions: %lld ok, %lld failed, %lld refused; "
             "spent %.4f USD of %.4f USD budgeted\n",
             i == 0 ? "research" : "deep-dive", n,
             (long long)json_integer_value(json_object_get(w, "succeeded")),
             (long long)json_integer_value(json_object_get(w, "failed")),
             (long long)json_integer_value(json_object_get(w, "refused")),
             json_real_value(json_object_get(w, "spent_usd")),
             budget * (double)n);
    }
  }
}

/* The provider's own failures count against the breaker: resets, 5xx,
 * timeouts. A 429 is the provider asking us to slow down (the retry honours
 * its Retry-After); it says nothing about whether the provider is up. */
static const int provider_failures[] = {
    UV_ECONNRESET, UV_EAI_AGAIN, UV_ETIMEDOUT, UV_ECONNREFUSED, UV_EPROTO};

static int setup(demo_t *d) {
  wflo_breaker_config_t bc;
  wflo_lock_config_t lc;
  wflo_llm_usage_t probe;
  char err[256], name[256];
  double usd;
  int rc;
  json_t *prices;

  memset(&probe, 0, sizeof(probe));
  d->model = d->opt.url != NULL ? d->opt.model : SIM_MODEL;
  /* The simulated model's prices; a real model uses the built-in table,
   * or a conservative guess when the table does not know it. */
  if (d->opt.url == NULL ||
      wflo_pricing_cost(d->model, &probe, &usd) == WFLO_E_NOT_FOUND) {
    prices = json_pack("{s:{s:{s:f, s:f, s:f}}}", "models", d->model,
                       "input_per_mtok", 2.5, "output_per_mtok", 10.0,
                       "max_call_usd", 0.008);
    rc = wflo_pricing_load_json(prices, err, sizeof(err));
    json_decref(prices);
    if (rc != 0) {
      fprintf(stderr, "wflo-demo: pricing: %s\n", err);
      return rc;
    }
  }
  if (d->opt.url != NULL) {
    llm_client_config_t cc;
    memset(&cc, 0, sizeof(cc));
    cc.base_url = d->opt.url;
    cc.api_key = getenv("OPENAI_API_KEY");
    cc.model = d->model;
    cc.timeout_ms = 30000;
    cc.connect_timeout_ms = 5000;
    rc = llm_client_new(d->loop, &cc, &d->provider.http);
    if (rc != 0)
      return rc;
  }
  wflo_breaker_config_init(&bc);
  bc.failure_threshold = 5;
  bc.recovery_timeout = 0.4;
  bc.success_threshold = 2;
  bc.expected_errors = provider_failures;
  bc.expected_errors_count =
      sizeof(provider_failures) / sizeof(provider_failures[0]);
  snprintf(name, sizeof(name), "%s/%s",
           d->opt.url != NULL ? d->opt.url : "sim-provider", d->model);
  rc = wflo_breaker_get(name, &bc, &d->breaker);
  if (rc != 0)
    return rc;
  wflo_lock_config_init(&lc);
  lc.max_concurrent = d->opt.concurrency;
  lc.timeout = 10.0;
  lc.contention_threshold = 0.05;
  rc = wflo_lock_get(d->opt.url != NULL ? d->opt.url : "sim-provider", &lc,
                     &d->lock);
  if (rc != 0)
    return rc;
  rc = wflo_workflow_new("research", d->opt.budget, &d->research);
  if (rc == 0)
    rc = wflo_workflow_new("deep-dive", d->opt.small_budget, &d->deep_dive);
  if (rc != 0)
    return rc;
  wflo_retry_policy_init(&d->policy);
  d->policy.name = "llm-step";
  d->policy.max_retries = 8;
  d->policy.base_delay = 0.1;
  d->policy.max_delay = 1.0;
  d->policy.jitter_factor = 0.2;
  d->policy.is_retryable = demo_retryable;
  return 0;
}

int main(int argc, char **argv) {
  demo_t *d = &g_demo;
  json_t *report;
  const char *failure;
  int i, rc;
  uv_loop_t loop;

  if (parse_options(argc, argv, &d->opt) != 0)
    return 2;
  g_rng = d->opt.seed * 0x9e3779b97f4a7c15ull + 1;
  wflo_rng_seed(d->opt.seed);
  wflo_set_log_level(WFLO_LOG_INFO);
  wflo_set_event_handler(on_event, d);
  if (uv_loop_init(&loop) != 0)
    return 1;
  d->loop = &loop;
  d->provider.loop = &loop;
  d->provider.opt = &d->opt;
  d->provider.t0 = uv_hrtime();
  d->tty = isatty(2) && !d->opt.quiet;
  rc = setup(d);
  if (rc != 0) {
    fprintf(stderr, "wflo-demo: setup failed: %s\n", wflo_strerror(rc));
    return 1;
  }
  if (d->opt.metrics_port >= 0) {
    rc = wflo_metrics_serve(&loop, "127.0.0.1", d->opt.metrics_port,
                            &d->metrics);
    if (rc != 0) {
      fprintf(stderr, "wflo-demo: metrics listener: %s\n", wflo_strerror(rc));
      return 1;
    }
    fprintf(stderr, "wflo-demo: metrics at http://127.0.0.1:%d/metrics\n",
            wflo_metrics_server_port(d->metrics));
  }
  d->ex = calloc((size_t)d->opt.executions, sizeof(*d->ex));
  if (d->ex == NULL)
    return 1;
  /* Every fourth execution is a deep dive: more steps, a smaller budget, so
   * the budget stops some of them before they overspend. */
  for (i = 0; i < d->opt.executions; i++) {
    execution_t *e = &d->ex[i];
    e->demo = d;
    e->index = i;
    e->wf = i % 4 == 3 ? d->deep_dive : d->research;
    e->nsteps = e->wf == d->deep_dive ? 8 : 4 + (int)(rnd() * 3);
    uv_timer_init(&loop, &e->start_timer);
    e->start_timer.data = e;
    uv_timer_start(&e->start_timer, execution_start,
                   (uint64_t)(i * 2500 / d->opt.executions), 0);
  }
  if (!d->opt.quiet) {
    uv_timer_init(&loop, &d->progress);
    d->progress.data = d;
    uv_timer_start(&d->progress, on_progress, 0, d->tty ? 100 : 1000);
  }
  uv_run(&loop, UV_RUN_DEFAULT);

  report = report_json(d);
  failure = self_check(d, report);
  json_object_set_new(report, "ok", json_boolean(failure == NULL));
  if (failure != NULL)
    json_object_set_new(report, "failure", json_string(failure));
  if (d->opt.json) {
    json_dumpf(report, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
  } else {
    print_summary(d, report);
    printf("\n%s\n",
           failure == NULL ? "self-check: ok" : "self-check: FAILED");
  }
  if (failure != NULL)
    fprintf(stderr, "wflo-demo: self-check failed: %s\n", failure);
  json_decref(report);

  wflo_workflow_put(d->research);
  wflo_workflow_put(d->deep_dive);
  wflo_breaker_put(d->breaker);
  wflo_lock_put(d->lock);
  wflo_pricing_reset();
  free(d->ex);
  rc = uv_loop_close(&loop);
  if (rc != 0 && failure == NULL) {
    fprintf(stderr, "wflo-demo: loop not closed: %s\n", uv_strerror(rc));
    return 1;
  }
  return failure == NULL ? 0 : 1;
}
