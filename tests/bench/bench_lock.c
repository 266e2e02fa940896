/* Benchmarks of the lock module, with their baselines measured in the same
 * run. Prints one `name value unit` line per figure, each the median of
 * RUNS short rounds, the figures of a round measured back to back (the
 * memory figure: of MEM_RUNS rounds). Build Release to measure.
 *
 *   mutex_pair               uncontended pthread mutex lock + unlock (ns)
 *   uv_mutex_pair            uncontended uv_mutex lock + unlock (ns)
 *   lock_uncontended         uncontended wflo_lock_acquire + release (ns)
 *   lock_contended_2threads  acquire + release, 2 threads on capacity 1 (ns
 *                            per pair, wall time / pairs)
 *   lock_async_grants_per_s  one loop, capacity 10, 1000 requests
 *                            outstanding, each released and re-queued when
 *                            granted (grants per second)
 *   lock_waiter_bytes        100k waiting async requests: the library's
 *                            allocations per waiter + sizeof(wflo_lock_req_t)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wflo.h>

/* Many short rounds: on a shared machine the median of short rounds lands
 * in slices nobody preempted, where long runs would average the noise in. */
#define RUNS 31
#define MEM_RUNS 5

static double now_ns(void) { return (double)uv_hrtime(); }

/* The single-thread loops are timed in thread CPU time: on a shared machine
 * a preemption would otherwise land in one figure and not its baseline. */
static double cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return v[n / 2];
}

static void check(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "bench_lock: %s: %s\n", what, wflo_strerror(rc));
    exit(1);
  }
}

/* --- counting allocator (lock_waiter_bytes) ------------------------------ */

static atomic_size_t bytes_live;

static void *count_alloc(size_t size, void *ud) {
  (void)ud;
  atomic_fetch_add(&bytes_live, size);
  return malloc(size);
}

static void *count_resize(void *p, size_t old_size, size_t new_size,
                          void *ud) {
  void *q = realloc(p, new_size);
  (void)ud;
  if (q != NULL) {
    atomic_fetch_sub(&bytes_live, old_size);
    atomic_fetch_add(&bytes_live, new_size);
  }
  return q;
}

static void count_release(void *p, size_t size, void *ud) {
  (void)ud;
  atomic_fetch_sub(&bytes_live, size);
  free(p);
}

/* --- uncontended --------------------------------------------------------- */

#define PAIRS 1000000

static double bench_pthread(void) {
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  double t = cpu_ns();
  int i;
  for (i = 0; i < PAIRS; i++) {
    pthread_mutex_lock(&m);
    __asm__ __volatile__("" ::: "memory");
    pthread_mutex_unlock(&m);
  }
  t = (cpu_ns() - t) / PAIRS;
  pthread_mutex_destroy(&m);
  return t;
}

static double bench_uv_mutex(void) {
  uv_mutex_t m;
  double t;
  int i;
  uv_mutex_init(&m);
  t = cpu_ns();
  for (i = 0; i < PAIRS; i++) {
    uv_mutex_lock(&m);
    __asm__ __volatile__("" ::: "memory");
    uv_mutex_unlock(&m);
  }
  t = (cpu_ns() - t) / PAIRS;
  uv_mutex_destroy(&m);
  return t;
}

static double bench_uncontended(void) {
  wflo_lock_t *l;
  wflo_lock_permit_t p;
  double t;
  int i;
  check(wflo_lock_new("bench", NULL, &l), "lock_new");
  t = cpu_ns();
  for (i = 0; i < PAIRS; i++) {
    if (wflo_lock_acquire(l, &p, NULL, -1.0) != 0)
      abort();
    __asm__ __volatile__("" ::: "memory");
    wflo_lock_release(&p);
  }
  t = (cpu_ns() - t) / PAIRS;
  wflo_lock_put(l);
  return t;
}

/* --- 2 threads, capacity 1 ----------------------------------------------- */

#define CONTENDED_PAIRS 20000

static void contend(void *arg) {
  wflo_lock_t *l = arg;
  wflo_lock_permit_t p;
  int i;
  for (i = 0; i < CONTENDED_PAIRS; i++) {
    if (wflo_lock_acquire(l, &p, NULL, WFLO_WAIT_FOREVER) != 0)
      abort();
    __asm__ __volatile__("" ::: "memory");
    wflo_lock_release(&p);
  }
}

static double bench_contended(void) {
  wflo_lock_t *l;
  uv_thread_t a, b;
  double t;
  check(wflo_lock_new("bench", NULL, &l), "lock_new");
  t = now_ns();
  uv_thread_create(&a, contend, l);
  uv_thread_create(&b, contend, l);
  uv_thread_join(&a);
  uv_thread_join(&b);
  t = (now_ns() - t) / (2.0 * CONTENDED_PAIRS);
  wflo_lock_put(l);
  return t;
}

/* --- async grants on one loop -------------------------------------------- */

#define ASYNC_REQS 1000
#define ASYNC_GRANTS 200000

typedef struct async_bench {
  uv_loop_t loop;
  wflo_lock_t *lock;
  long grants;
  long target;
} async_bench_t;

static void on_grant(wflo_lock_req_t *req, int status) {
  async_bench_t *ab = req->data;
  if (status != 0)
    abort();
  ab->grants++;
  wflo_lock_release(&req->permit);
  if (ab->grants + ASYNC_REQS <= ab->target &&
      wflo_lock_acquire_async(&ab->loop, ab->lock, req, NULL, -1.0,
                              on_grant) != 0)
    abort();
}

static double bench_async(void) {
  static wflo_lock_req_t reqs[ASYNC_REQS];
  async_bench_t ab;
  wflo_lock_config_t c;
  double t;
  int i;
  wflo_lock_config_init(&c);
  c.max_concurrent = 10;
  c.max_waiters = ASYNC_REQS;
  check(uv_loop_init(&ab.loop), "uv_loop_init");
  check(wflo_lock_new("bench", &c, &ab.lock), "lock_new");
  ab.grants = 0;
  ab.target = ASYNC_GRANTS;
  t = now_ns();
  for (i = 0; i < ASYNC_REQS; i++) {
    reqs[i].data = &ab;
    check(wflo_lock_acquire_async(&ab.loop, ab.lock, &reqs[i], NULL, -1.0,
                                  on_grant),
          "acquire_async");
  }
  uv_run(&ab.loop, UV_RUN_DEFAULT);
  t = now_ns() - t;
  if (ab.grants != ab.target)
    abort();
  wflo_lock_put(ab.lock);
  check(uv_loop_close(&ab.loop), "uv_loop_close");
  return (double)ab.grants / (t / 1e9);
}

/* --- memory per waiter --------------------------------------------------- */

#define WAITERS 100000

static void on_cancel(wflo_lock_req_t *req, int status) {
  (void)req;
  if (status != WFLO_E_CANCELED)
    abort();
}

static double bench_waiter_bytes(void) {
  wflo_lock_req_t *reqs = calloc(WAITERS, sizeof(*reqs));
  wflo_lock_config_t c;
  wflo_lock_permit_t held;
  wflo_lock_t *l;
  uv_loop_t loop;
  size_t before, after;
  int i;
  if (reqs == NULL)
    abort();
  wflo_lock_config_init(&c);
  c.max_waiters = WAITERS;
  check(uv_loop_init(&loop), "uv_loop_init");
  check(wflo_lock_new("bench", &c, &l), "lock_new");
  check(wflo_lock_acquire(l, &held, NULL, 0), "acquire");
  before = atomic_load(&bytes_live);
  for (i = 0; i < WAITERS; i++)
    check(wflo_lock_acquire_async(&loop, l, &reqs[i], NULL, -1.0, on_cancel),
          "acquire_async");
  after = atomic_load(&bytes_live);
  for (i = 0; i < WAITERS; i++)
    check(wflo_lock_cancel(&reqs[i]), "cancel");
  uv_run(&loop, UV_RUN_DEFAULT);
  wflo_lock_release(&held);
  wflo_lock_put(l);
  check(uv_loop_close(&loop), "uv_loop_close");
  free(reqs);
  return (double)(after - before) / WAITERS + (double)sizeof(wflo_lock_req_t);
}

int main(void) {
  static const wflo_allocator_t counting = {count_alloc, count_resize,
                                            count_release, NULL};
  double mutex[RUNS], uvm[RUNS], unc[RUNS], con[RUNS], asy[RUNS];
  double mem[MEM_RUNS];
  int r;
  wflo_set_log_level(WFLO_LOG_OFF);
  check(wflo_set_allocator(&counting), "set_allocator");
  for (r = 0; r < RUNS; r++) {
    mutex[r] = bench_pthread();
    uvm[r] = bench_uv_mutex();
    unc[r] = bench_uncontended();
    con[r] = bench_contended();
    asy[r] = bench_async();
  }
  for (r = 0; r < MEM_RUNS; r++)
    mem[r] = bench_waiter_bytes();
  printf("mutex_pair %.2f ns\n", median(mutex, RUNS));
  printf("uv_mutex_pair %.2f ns\n", median(uvm, RUNS));
  printf("lock_uncontended %.2f ns\n", median(unc, RUNS));
  printf("lock_contended_2threads %.1f ns\n", median(con, RUNS));
  printf("lock_async_grants_per_s %.0f per s\n", median(asy, RUNS));
  printf("lock_waiter_bytes %.1f bytes\n", median(mem, MEM_RUNS));
  return 0;
}
