/* The event sink: one handler for every structured event, a level below
 * which events are dropped before any JSON is built, and a default handler
 * writing JSON lines to stderr. */
#include "internal/common.h"
#include "internal/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* -1 until WFLO_LOG is read; wflo_set_log_level() overrides it for good. */
atomic_int wflo__log_level = -1;

static uv_once_t handler_once = UV_ONCE_INIT;
static uv_mutex_t handler_mu;
static wflo_event_handler_t handler; /* NULL: the default handler */
static void *handler_ud;

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          "off"};

const char *wflo_log_level_name(wflo_log_level_t level) {
  if ((int)level < 0 || (int)level > (int)WFLO_LOG_OFF)
    return "unknown";
  return level_names[level];
}

int wflo__log_level_init(void) {
  int level = WFLO_LOG_WARN, expected = -1, i;
  const char *env = getenv("WFLO_LOG");
  if (env != NULL) {
    for (i = 0; i <= (int)WFLO_LOG_OFF; i++)
      if (strcmp(env, level_names[i]) == 0)
        level = i;
  }
  /* Lose gracefully to a concurrent wflo_set_log_level(). */
  if (!atomic_compare_exchange_strong(&wflo__log_level, &expected, level))
    return atomic_load(&wflo__log_level);
  return level;
}

void wflo_set_log_level(wflo_log_level_t level) {
  if ((int)level < 0 || (int)level > (int)WFLO_LOG_OFF)
    return;
  atomic_store(&wflo__log_level, (int)level);
}

wflo_log_level_t wflo_get_log_level(void) {
  int cur = atomic_load(&wflo__log_level);
  if (cur < 0)
    cur = wflo__log_level_init();
  return (wflo_log_level_t)cur;
}

static void handler_init(void) { uv_mutex_init(&handler_mu); }

void wflo_set_event_handler(wflo_event_handler_t h, void *ud) {
  uv_once(&handler_once, handler_init);
  uv_mutex_lock(&handler_mu);
  handler = h;
  handler_ud = ud;
  uv_mutex_unlock(&handler_mu);
}

/* One line per event, written with one fwrite so lines from several threads
 * do not interleave (stdio locks the stream per call). */
static void default_handler(const wflo_event_t *ev) {
  struct timespec ts;
  json_t *line;
  char *text;
  void (*jfree)(void *) = NULL;

  timespec_get(&ts, TIME_UTC);
  line = json_object();
  if (line == NULL)
    return;
  json_object_set_new(line, "ts",
                      json_real((double)ts.tv_sec + (double)ts.tv_nsec / 1e9));
  json_object_set_new(line, "level", json_string(level_names[ev->level]));
  json_object_set_new(line, "event", wflo__json_string(ev->name));
  /* Fields never overwrite the line's own keys. json_object_update_missing
   * only reads its second argument. */
  json_object_update_missing(line, (json_t *)(uintptr_t)ev->fields);
  text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(line);
  if (text == NULL)
    return;
  {
    size_t n = strlen(text);
    text[n] = '\n'; /* overwrite the NUL: write the line in one call */
    fwrite(text, 1, n + 1, stderr);
    text[n] = '\0';
  }
  json_get_alloc_funcs(NULL, &jfree);
  jfree(text);
}

void wflo__emit(const char *name, wflo_log_level_t level, json_t *fields) {
  wflo_event_handler_t h;
  void *ud;
  wflo_event_t ev;

  if (fields == NULL)
    return; /* OOM while building it: an event is not worth failing for */
  uv_once(&handler_once, handler_init);
  uv_mutex_lock(&handler_mu);
  h = handler;
  ud = handler_ud;
  uv_mutex_unlock(&handler_mu);

  ev.name = name;
  ev.level = level;
  ev.fields = fields;
  if (h != NULL)
    h(&ev, ud);
  else
    default_handler(&ev);
  json_decref(fields);
}
