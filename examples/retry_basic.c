/* retry_basic: retry a flaky operation, synchronously and on a libuv loop.
 *
 * Build: cc -std=gnu11 retry_basic.c $(pkg-config --cflags --libs wflo)
 * Run:   ./retry_basic      (events go to stderr as JSON lines; WFLO_LOG=off
 *                            silences them)
 * Runs in about 0.1 s: the delays are milliseconds. */
#include <stdio.h>

#include <wflo.h>

/* --- sync ---------------------------------------------------------------- */

/* Stands in for an HTTP call: fails twice with a transient error, then
 * returns a positive result. Any negative code means failure. */
static int flaky_fetch(void *arg) {
  int *calls = arg;
  if (++*calls <= 2)
    return UV_ECONNRESET;
  return 200;
}

static void print_retry(int attempt, int err, double delay, void *ud) {
  (void)ud;
  printf("  retry %d after %s, waiting %.0f ms\n", attempt, wflo_err_name(err),
         delay * 1e3);
}

static int sync_demo(void) {
  wflo_retry_policy_t policy;
  wflo_retry_report_t report;
  int calls = 0, rc;

  wflo_retry_policy_init(&policy); /* defaults: 3 retries, exponential */
  policy.name = "fetch";
  policy.base_delay = 0.01; /* 10 ms, then 20 ms, 40 ms ... */
  policy.max_delay = 0.1;
  policy.on_retry = print_retry;

  printf("sync: wflo_retry_execute\n");
  rc = wflo_retry_execute_ex(&policy, flaky_fetch, &calls, &report);
  printf("  result %d after %d attempts, %.0f ms of waiting\n", rc,
         report.attempts, report.total_delay * 1e3);

  /* The statement form: the block is the attempt, rc its result. */
  printf("sync: WFLO_RETRY\n");
  calls = 0;
  WFLO_RETRY(&policy, rc) {
    rc = flaky_fetch(&calls);
    if (rc == UV_ECONNRESET)
      wflo_retry_hint(0.005); /* a server's Retry-After: 5 ms */
  }
  printf("  result %d after %d calls\n", rc, calls);
  return rc == 200 ? 0 : 1;
}

/* --- async --------------------------------------------------------------- */

/* One in-flight request: a timer stands in for the I/O. */
typedef struct request {
  uv_timer_t io;
  wflo_call_t *call; /* the attempt to report to */
  int attempts;
  int result;
} request_t;

static void on_io_done(uv_timer_t *t) {
  request_t *req = t->data;
  /* Report the attempt exactly once; libwflo schedules the next one. */
  wflo_call_done(req->call, req->attempts < 3 ? UV_ETIMEDOUT : 200);
}

/* Starts one attempt; it must not block. */
static void start_fetch(wflo_call_t *call, void *arg) {
  request_t *req = arg;
  req->call = call;
  req->attempts++;
  uv_timer_start(&req->io, on_io_done, 2, 0); /* "I/O" takes 2 ms */
}

static void fetch_done(int err, void *arg) {
  request_t *req = arg;
  req->result = err; /* runs exactly once, on the loop thread */
  uv_close((uv_handle_t *)&req->io, NULL);
}

static int async_demo(void) {
  uv_loop_t loop;
  request_t req = {0};
  wflo_retry_policy_t policy;
  int rc;

  wflo_retry_policy_init(&policy);
  policy.name = "fetch_async";
  policy.strategy = WFLO_BACKOFF_FIXED;
  policy.base_delay = 0.005; /* 5 ms between attempts */
  policy.on_retry = print_retry;

  printf("async: wflo_retry_start\n");
  uv_loop_init(&loop);
  uv_timer_init(&loop, &req.io);
  req.io.data = &req;
  /* The policy is copied: it may go out of scope once this returns. */
  rc = wflo_retry_start(&loop, &policy, start_fetch, &req, fetch_done, NULL);
  if (rc != 0) {
    fprintf(stderr, "wflo_retry_start: %s\n", wflo_strerror(rc));
    uv_close((uv_handle_t *)&req.io, NULL);
  }
  uv_run(&loop, UV_RUN_DEFAULT); /* returns once the retry is done */
  printf("  result %d after %d attempts\n", req.result, req.attempts);
  rc = uv_loop_close(&loop); /* libwflo left nothing open on the loop */
  return rc == 0 && req.result == 200 ? 0 : 1;
}

int main(void) {
  int rc = sync_demo();
  rc |= async_demo();
  printf(rc == 0 ? "ok\n" : "FAILED\n");
  return rc;
}
