/* lock_basic: a bulkhead around a pool of 2 database connections shared by
 * 4 worker threads, then the lock's stats as JSON.
 *
 * Build: cc -std=gnu11 lock_basic.c $(pkg-config --cflags --libs wflo)
 * Run:   ./lock_basic     (about 0.15 s; exits 0 when all 12 queries got
 *                          a connection)
 */
/* ctest-labels: threads */
#include <stdio.h>
#include <stdlib.h>

#include <wflo.h>

static wflo_lock_t *pool; /* shared by every thread */

static void worker(void *arg) {
  int i, rc;
  for (i = 0; i < 3; i++) {
    /* At most 2 threads are inside the block at once; the others wait in
     * FIFO order, up to the lock's default timeout (30 s). The permit is
     * released when the block ends, also on break, goto or return. */
    WFLO_WITH_LOCK(pool, rc) {
      printf("worker %d: query %d on a pooled connection\n",
             (int)(intptr_t)arg, i);
      uv_sleep(20); /* the query; a wait over 10 ms counts as contention */
    }
    if (rc != 0) /* no permit came in time: the block was skipped */
      fprintf(stderr, "worker %d: %s\n", (int)(intptr_t)arg,
              wflo_strerror(rc));
  }
}

int main(void) {
  wflo_lock_config_t cfg;
  uv_thread_t threads[4];
  json_t *stats;
  char *text;
  int i, ok;

  wflo_lock_config_init(&cfg);
  cfg.max_concurrent = 2;           /* the pool's size */
  cfg.contention_threshold = 0.010; /* seconds */
  wflo_set_log_level(WFLO_LOG_OFF); /* keep contention events off stderr */
  if (wflo_lock_get("db_pool", &cfg, &pool) != 0)
    return 1;

  for (i = 0; i < 4; i++)
    uv_thread_create(&threads[i], worker, (void *)(intptr_t)i);
  for (i = 0; i < 4; i++)
    uv_thread_join(&threads[i]);

  /* total_acquisitions 12, contention_count and wait times > 0, no holder
   * left, concurrent_capacity 2. */
  stats = wflo_lock_stats_json(pool);
  text = stats != NULL ? json_dumps(stats, JSON_INDENT(2)) : NULL;
  if (text != NULL)
    printf("%s\n", text);
  ok = json_integer_value(json_object_get(stats, "total_acquisitions")) == 12;
  free(text);
  json_decref(stats);
  wflo_lock_put(pool);
  return ok ? 0 : 1;
}
