/* breaker_basic: guard a flaky call with a circuit breaker and watch the
 * circuit open, probe and close again.
 *
 * Build: cc -std=gnu11 breaker_basic.c $(pkg-config --cflags --libs wflo)
 * Run:   ./breaker_basic    (about 0.2 s; exits 0 when the circuit opened
 *                            during the failures and closed after them)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wflo.h>

/* A pretend remote service: fails for calls 3..8, then recovers. */
static int flaky_call(int n) { return n >= 3 && n <= 8 ? UV_ECONNREFUSED : 0; }

/* Print breaker transitions and count openings and closings; every other
 * event is ignored here. */
static void on_event(const wflo_event_t *ev, void *ud) {
  int *seen = ud; /* [0]: opened, [1]: closed */
  if (strcmp(ev->name, "circuit_breaker_opened") == 0)
    seen[0]++;
  else if (strcmp(ev->name, "circuit_breaker_closed") == 0)
    seen[1]++;
  if (strncmp(ev->name, "circuit_breaker_", 16) == 0) {
    char *fields = json_dumps(ev->fields, JSON_COMPACT | JSON_SORT_KEYS);
    printf("  event %s %s\n", ev->name, fields != NULL ? fields : "");
    free(fields);
  }
}

int main(void) {
  wflo_breaker_config_t cfg;
  wflo_breaker_t *b;
  struct timespec pause = {0, 10 * 1000 * 1000}; /* 10 ms */
  int rc, seen[2] = {0, 0};

  wflo_set_event_handler(on_event, seen);
  wflo_set_log_level(WFLO_LOG_INFO); /* half_open/closed events are info */

  /* Open after 3 consecutive failures, probe again after 25 ms, close after
   * 2 successful probes. */
  wflo_breaker_config_init(&cfg);
  cfg.failure_threshold = 3;
  cfg.recovery_timeout = 0.025;
  cfg.success_threshold = 2;
  if (wflo_breaker_get("payments-api", &cfg, &b) != 0)
    return 1;

  for (int n = 0; n < 16; n++) {
    /* The block runs only if the breaker admits the call; otherwise rc is
     * WFLO_E_BREAKER_OPEN. The rc left at the end of the block is what the
     * breaker records; leaving the block by `break` or `return` records a
     * neutral outcome instead. */
    WFLO_WITH_BREAKER(b, rc) { rc = flaky_call(n); }
    printf("call %2d: %-22s state %s\n", n, wflo_err_name(rc),
           wflo_breaker_state_name(wflo_breaker_state(b)));
    nanosleep(&pause, NULL);
  }

  rc = seen[0] >= 1 && seen[1] >= 1 &&
               wflo_breaker_state(b) == WFLO_BREAKER_CLOSED
           ? 0
           : 1;
  wflo_breaker_put(b);
  wflo_set_event_handler(NULL, NULL);
  return rc;
}
