/* The ledger hook: a write-only sink for spend records. The budget check
 * never reads it; a commit or charge hands it one record after the
 * accounting is done, on the committing thread, with no libwflo lock held.
 * Plus one ready implementation appending JSON lines to a file. */
#include "internal/config.h"
#include "internal/context.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

/* The installed ledger, copied under a mutex; wflo__ledger_installed lets
 * the commit path skip the mutex entirely when no ledger is set (the common
 * case, and the one the benchmarks measure). */
static uv_once_t ledger_once = UV_ONCE_INIT;
static uv_mutex_t ledger_mu;
static wflo_ledger_t ledger;
atomic_bool wflo__ledger_installed;

static void ledger_init(void) { uv_mutex_init(&ledger_mu); }

void wflo_set_ledger(const wflo_ledger_t *l) {
  uv_once(&ledger_once, ledger_init);
  uv_mutex_lock(&ledger_mu);
  if (l != NULL && l->record != NULL) {
    ledger = *l;
    atomic_store(&wflo__ledger_installed, true);
  } else {
    ledger.record = NULL;
    ledger.ud = NULL;
    atomic_store(&wflo__ledger_installed, false);
  }
  uv_mutex_unlock(&ledger_mu);
}

static double unix_now(void) {
  struct timespec ts;
  if (timespec_get(&ts, TIME_UTC) == 0)
    return (double)time(NULL);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void emit_failed(wflo_context_t *ctx, int err) {
  if (!wflo__event_on(WFLO_LOG_ERROR))
    return;
  wflo__emit("ledger_failed", WFLO_LOG_ERROR,
             wflo__json_obj("execution_id",
                            wflo__json_string(ctx->execution_id), "error",
                            wflo__json_err(err), NULL));
}

void wflo__ledger_record(wflo_context_t *ctx, const char *model,
                         uint64_t pico) {
  wflo_ledger_t l;
  json_t *entry;
  int rc;
  if (pico == 0 || !wflo__ledger_on())
    return;
  uv_mutex_lock(&ledger_mu);
  l = ledger;
  uv_mutex_unlock(&ledger_mu);
  if (l.record == NULL)
    return;
  entry = wflo__json_obj(
      "execution_id", wflo__json_string(ctx->execution_id), "workflow",
      wflo__json_string(ctx->workflow), "model", wflo__json_string(model),
      "usd", json_real(wflo__pico_to_usd(pico)), "spent_usd",
      json_real(wflo__pico_to_usd(wflo__budget_spent_pico(ctx))), "unix_time",
      json_real(unix_now()), NULL);
  /* A record that could not even be built is a record the ledger lost:
   * say so the same way as a failing ledger. */
  rc = entry != NULL ? l.record(entry, l.ud) : WFLO_E_NOMEM;
  json_decref(entry);
  if (rc != 0)
    emit_failed(ctx, rc);
}

/* --- JSON lines file ----------------------------------------------------- */

typedef struct jsonl {
  uv_mutex_t mu; /* one line at a time, whole */
  FILE *f;
} jsonl_t;

static int jsonl_record(const json_t *entry, void *ud) {
  jsonl_t *j = ud;
  void (*jfree)(void *) = NULL;
  char *text = json_dumps(entry, JSON_COMPACT | JSON_PRESERVE_ORDER);
  size_t n;
  int rc = 0;
  if (text == NULL)
    return WFLO_E_NOMEM;
  n = strlen(text);
  uv_mutex_lock(&j->mu);
  errno = 0;
  if (fwrite(text, 1, n, j->f) != n || fputc('\n', j->f) == EOF ||
      fflush(j->f) != 0)
    rc = errno != 0 ? -errno : UV_EIO;
  uv_mutex_unlock(&j->mu);
  json_get_alloc_funcs(NULL, &jfree);
  jfree(text);
  return rc;
}

int wflo_ledger_jsonl(const char *path, wflo_ledger_t *out) {
  jsonl_t *j;
  int rc;
  if (path == NULL || out == NULL)
    return WFLO_E_INVAL;
  j = wflo__malloc(sizeof(*j));
  if (j == NULL)
    return WFLO_E_NOMEM;
  if (uv_mutex_init(&j->mu) != 0) {
    rc = WFLO_E_NOMEM;
    goto fail_free_state;
  }
  errno = 0;
  j->f = fopen(path, "a");
  if (j->f == NULL) {
    rc = errno != 0 ? -errno : UV_EIO;
    goto fail_destroy_mutex;
  }
  out->record = jsonl_record;
  out->ud = j;
  return 0;

fail_destroy_mutex:
  uv_mutex_destroy(&j->mu);
fail_free_state:
  wflo__free(j, sizeof(*j));
  return rc;
}

int wflo_ledger_jsonl_close(wflo_ledger_t *l) {
  jsonl_t *j;
  int rc = 0;
  bool in_use;
  if (l == NULL || l->record != jsonl_record || l->ud == NULL)
    return WFLO_E_INVAL;
  uv_once(&ledger_once, ledger_init);
  uv_mutex_lock(&ledger_mu);
  in_use = ledger.record == jsonl_record && ledger.ud == l->ud;
  uv_mutex_unlock(&ledger_mu);
  if (in_use)
    return WFLO_E_STATE;
  j = l->ud;
  errno = 0;
  if (fclose(j->f) != 0)
    rc = errno != 0 ? -errno : UV_EIO;
  uv_mutex_destroy(&j->mu);
  wflo__free(j, sizeof(*j));
  l->record = NULL;
  l->ud = NULL;
  return rc;
}
