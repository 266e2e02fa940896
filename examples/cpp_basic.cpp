// cpp_basic: libwflo from C++. The header is plain C with extern "C", so a
// C++ program uses the same functions and statement macros as C: a retry
// with a C callback, a breaker with WFLO_WITH_BREAKER, a lock with
// WFLO_WITH_LOCK and a budget with WFLO_WITH_CONTEXT / WFLO_TRACK_LLM.
//
// Build: g++ -std=c++11 cpp_basic.cpp $(pkg-config --cflags --libs wflo)
// Run:   ./cpp_basic      (a few milliseconds; exits 0 when every step
//                          behaved as described)
#include <wflo.h>

#include <cstdio>

namespace {

struct Flaky {
  int calls;
  int fail_first; // how many calls fail before one succeeds
};

} // namespace

// libwflo calls plain C function pointers: give them C linkage (no lambda,
// no member function). The void * carries the C++ object.
extern "C" {
static int flaky_fetch(void *arg) {
  Flaky *f = static_cast<Flaky *>(arg);
  return ++f->calls <= f->fail_first ? UV_ECONNRESET : 200;
}
}

static bool retry_demo() {
  wflo_retry_policy_t policy;
  wflo_retry_policy_init(&policy); // every field gets its default
  policy.name = "cpp_fetch";
  policy.base_delay = 0.001; // 1 ms, 2 ms, ...
  policy.max_delay = 0.01;

  Flaky f = {0, 2};
  int rc = wflo_retry_execute(&policy, flaky_fetch, &f);
  std::printf("retry: result %d after %d calls\n", rc, f.calls);
  return rc == 200 && f.calls == 3;
}

static bool breaker_demo() {
  wflo_breaker_config_t cfg;
  wflo_breaker_config_init(&cfg);
  cfg.failure_threshold = 2;
  cfg.recovery_timeout = 60.0; // stays open for the rest of this program
  wflo_breaker_t *b = nullptr;
  if (wflo_breaker_new("cpp_service", &cfg, &b) != 0)
    return false;

  Flaky f = {0, 100}; // a service that is down
  int rc = 0, refused = 0;
  for (int i = 0; i < 5; i++) {
    // The block runs only when the breaker admits the call; rc at its end
    // is recorded. After 2 failures the circuit opens and refuses.
    WFLO_WITH_BREAKER(b, rc) { rc = flaky_fetch(&f); }
    if (rc == WFLO_E_BREAKER_OPEN)
      refused++;
  }
  std::printf("breaker: %d calls reached the service, %d refused, state %s\n",
              f.calls, refused,
              wflo_breaker_state_name(wflo_breaker_state(b)));
  bool ok = f.calls == 2 && refused == 3 &&
            wflo_breaker_state(b) == WFLO_BREAKER_OPEN;
  wflo_breaker_put(b);
  return ok;
}

static bool lock_demo() {
  wflo_lock_config_t cfg;
  wflo_lock_config_init(&cfg);
  cfg.max_concurrent = 1; // an exclusive lock
  wflo_lock_t *l = nullptr;
  if (wflo_lock_new("cpp_resource", &cfg, &l) != 0)
    return false;

  int rc = 0, inside = 0;
  // Held inside the block, released when it ends (also on break/return).
  WFLO_WITH_LOCK(l, rc) { inside++; }
  std::printf("lock: block ran %d time(s), rc %s\n", inside,
              wflo_err_name(rc));
  wflo_lock_put(l);
  return rc == 0 && inside == 1;
}

static bool budget_demo() {
  // Prices in USD per million tokens; each call reserves max_call_usd.
  json_t *prices = json_pack("{s:{s:{s:f,s:f,s:f}}}", "models", "cpp-model",
                             "input_per_mtok", 1.0, "output_per_mtok", 2.0,
                             "max_call_usd", 0.01);
  int rc = wflo_pricing_load_json(prices, nullptr, 0);
  json_decref(prices);
  if (rc != 0)
    return false;

  wflo_context_t *ctx = nullptr;
  if (wflo_context_new(nullptr, "cpp_workflow", 0.015, nullptr, &ctx) != 0) {
    wflo_pricing_reset();
    return false;
  }
  int done = 0, refused = 0;
  WFLO_WITH_CONTEXT(ctx) {
    for (int i = 0; i < 4; i++) {
      wflo_llm_usage_t usage;
      // Reserves $0.01 first (refused once the budget cannot cover it),
      // then charges what the block says the call used.
      WFLO_TRACK_LLM("cpp-model", usage, rc) {
        usage.prompt_tokens = 1000; // what the provider reported
        usage.completion_tokens = 500;
        rc = 0;
      }
      if (rc == WFLO_E_BUDGET_EXCEEDED)
        refused++;
      else if (rc == 0)
        done++;
    }
  }
  // Each call costs 1000 * $1/M + 500 * $2/M = $0.002. The fourth cannot
  // reserve its $0.01 on top of $0.006 spent within $0.015.
  double spent = wflo_budget_spent(ctx);
  std::printf("budget: %d calls charged, %d refused, spent $%.4f of $%.3f\n",
              done, refused, spent, 0.015);
  wflo_context_put(ctx);
  wflo_pricing_reset();
  return done == 3 && refused == 1 && spent > 0.0059 && spent < 0.0061;
}

int main() {
  wflo_set_log_level(WFLO_LOG_OFF); // no retry/breaker events on stderr
  bool ok = retry_demo();
  ok = breaker_demo() && ok;
  ok = lock_demo() && ok;
  ok = budget_demo() && ok;
  std::printf(ok ? "ok\n" : "FAILED\n");
  return ok ? 0 : 1;
}
