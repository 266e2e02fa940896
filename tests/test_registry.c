/* Tests of the named registry and reference counts (src/registry.c). */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "internal/registry.h"

typedef struct obj {
  wflo__ref_t ref;
  char *name;
  int value;
} obj_t;

static atomic_int g_created, g_destroyed;

static int create_obj(const char *name, void *arg, wflo__ref_t **out) {
  obj_t *o = wflo__calloc(1, sizeof(*o));
  if (o == NULL)
    return WFLO_E_NOMEM;
  o->name = wflo__strdup(name);
  if (o->name == NULL) {
    wflo__free(o, sizeof(*o));
    return WFLO_E_NOMEM;
  }
  o->ref.name = o->name;
  o->value = arg != NULL ? *(int *)arg : 0;
  atomic_fetch_add(&g_created, 1);
  *out = &o->ref;
  return 0;
}

static void put_obj(obj_t *o) {
  if (o != NULL && wflo__ref_dec(&o->ref)) {
    wflo__strfree(o->name);
    wflo__free(o, sizeof(*o));
    atomic_fetch_add(&g_destroyed, 1);
  }
}

static obj_t *get_obj(wflo__registry_t *reg, const char *name, int v,
                      bool *created) {
  wflo__ref_t *r = NULL;
  bool c;
  if (wflo__registry_get(reg, name, create_obj, &v, &r, &c) != 0)
    return NULL;
  if (created != NULL)
    *created = c;
  return wflo__container_of(r, obj_t, ref);
}

static void test_same_name_same_object(void **state) {
  wflo__registry_t reg = WFLO__REGISTRY_INIT;
  bool created;
  obj_t *a, *b, *c;
  (void)state;
  a = get_obj(&reg, "alpha", 1, &created);
  assert_non_null(a);
  assert_true(created);
  b = get_obj(&reg, "alpha", 2, &created);
  assert_ptr_equal(a, b);
  assert_false(created);
  assert_int_equal(b->value, 1); /* the first config stays */
  c = get_obj(&reg, "beta", 3, &created);
  assert_ptr_not_equal(a, c);
  assert_int_equal(reg.count, 2);
  put_obj(a);
  assert_int_equal(reg.count, 2);
  put_obj(b);
  assert_int_equal(reg.count, 1);
  /* A new get after the last put makes a fresh object. */
  a = get_obj(&reg, "alpha", 4, &created);
  assert_true(created);
  assert_int_equal(a->value, 4);
  put_obj(a);
  put_obj(c);
  assert_int_equal(reg.count, 0);
  assert_null(reg.buckets); /* the table goes with the last object */
  assert_int_equal(wflo__mem_outstanding(), 0);
}

static void test_growth_and_snapshot(void **state) {
  enum { N = 5000 };
  wflo__registry_t reg = WFLO__REGISTRY_INIT;
  obj_t **objs = calloc(N, sizeof(*objs));
  wflo__ref_t **snap;
  size_t n, i;
  char name[32];
  long sum = 0;
  (void)state;
  assert_non_null(objs);
  for (i = 0; i < N; i++) {
    snprintf(name, sizeof(name), "obj-%zu", i);
    objs[i] = get_obj(&reg, name, (int)i, NULL);
    assert_non_null(objs[i]);
  }
  assert_true(reg.nbuckets >= N);
  for (i = 0; i < N; i++) {
    snprintf(name, sizeof(name), "obj-%zu", i);
    assert_ptr_equal(get_obj(&reg, name, -1, NULL), objs[i]);
    put_obj(objs[i]);
  }
  assert_int_equal(wflo__registry_snapshot(&reg, &snap, &n), 0);
  assert_int_equal(n, N);
  for (i = 0; i < n; i++) {
    obj_t *o = wflo__container_of(snap[i], obj_t, ref);
    sum += o->value;
  }
  assert_int_equal(sum, (long)N * (N - 1) / 2);
  for (i = 0; i < n; i++)
    put_obj(wflo__container_of(snap[i], obj_t, ref));
  wflo__free(snap, n * sizeof(*snap));
  for (i = 0; i < N; i++)
    put_obj(objs[i]);
  assert_int_equal(reg.count, 0);
  assert_int_equal(wflo__mem_outstanding(), 0);
  free(objs);
}

static void test_private_refs(void **state) {
  obj_t *o;
  wflo__ref_t *r = NULL;
  (void)state;
  assert_int_equal(create_obj("p", NULL, &r), 0);
  o = wflo__container_of(r, obj_t, ref);
  wflo__ref_init(&o->ref);
  wflo__ref_inc(&o->ref);
  assert_false(wflo__ref_dec(&o->ref));
  put_obj(o);
  assert_int_equal(wflo__mem_outstanding(), 0);
}

/* Threads get and put the same few names concurrently: every object created
 * is destroyed exactly once, and a get never returns a dying object (ASan
 * and TSan catch a use after free). */
static wflo__registry_t g_reg = WFLO__REGISTRY_INIT;
static atomic_int g_bad;

static void churn(void *arg) {
  int i, seed = (int)(intptr_t)arg;
  char name[8];
  for (i = 0; i < 20000; i++) {
    obj_t *o;
    snprintf(name, sizeof(name), "n%d", (i * 7 + seed) % 4);
    o = get_obj(&g_reg, name, i, NULL);
    if (o == NULL || strcmp(o->name, name) != 0) {
      atomic_fetch_add(&g_bad, 1);
      continue;
    }
    put_obj(o);
  }
}

static void test_concurrent_get_put(void **state) {
  uv_thread_t th[4];
  int i;
  (void)state;
  atomic_store(&g_created, 0);
  atomic_store(&g_destroyed, 0);
  for (i = 0; i < 4; i++)
    assert_int_equal(uv_thread_create(&th[i], churn, (void *)(intptr_t)i), 0);
  for (i = 0; i < 4; i++)
    uv_thread_join(&th[i]);
  assert_int_equal(atomic_load(&g_bad), 0);
  assert_int_equal(atomic_load(&g_created), atomic_load(&g_destroyed));
  assert_true(atomic_load(&g_created) >= 4);
  assert_int_equal(g_reg.count, 0);
  assert_int_equal(wflo__mem_outstanding(), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_same_name_same_object),
      cmocka_unit_test(test_growth_and_snapshot),
      cmocka_unit_test(test_private_refs),
      cmocka_unit_test(test_concurrent_get_put),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
