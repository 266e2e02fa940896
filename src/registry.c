/* Named registries: a chained hash table per registry, grown by doubling,
 * all behind one mutex. See internal/registry.h. */
#include "internal/registry.h"

static uv_once_t reg_once = UV_ONCE_INIT;
static uv_mutex_t reg_mu;

static void reg_init(void) { uv_mutex_init(&reg_mu); }

/* FNV-1a, 64-bit: names are short and trusted, and lookups must stay well
 * under the 300 ns budget with a million names. */
static size_t hash_name(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  while (*s)
    h = (h ^ (unsigned char)*s++) * 0x100000001b3ull;
  return (size_t)(h ^ (h >> 32));
}

void wflo__ref_init(wflo__ref_t *r) {
  atomic_init(&r->refs, 1);
  r->next = NULL;
  r->hash = 0;
  r->name = NULL;
  r->reg = NULL;
}

void wflo__ref_inc(wflo__ref_t *r) {
  atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

static void table_remove(wflo__registry_t *reg, wflo__ref_t *r) {
  wflo__ref_t **pp = &reg->buckets[r->hash & (reg->nbuckets - 1)];
  while (*pp != r)
    pp = &(*pp)->next;
  *pp = r->next;
  if (--reg->count == 0) {
    wflo__free(reg->buckets, reg->nbuckets * sizeof(*reg->buckets));
    reg->buckets = NULL;
    reg->nbuckets = 0;
  }
}

bool wflo__ref_dec(wflo__ref_t *r) {
  bool last;
  if (r->reg == NULL)
    return atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1;
  uv_mutex_lock(&reg_mu);
  last = atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1;
  if (last)
    table_remove(r->reg, r);
  uv_mutex_unlock(&reg_mu);
  return last;
}

static void table_grow(wflo__registry_t *reg) {
  size_t n = reg->nbuckets * 2, i;
  wflo__ref_t **b = wflo__calloc(n, sizeof(*b));
  if (b == NULL)
    return; /* longer chains, still correct */
  for (i = 0; i < reg->nbuckets; i++) {
    wflo__ref_t *r = reg->buckets[i], *next;
    for (; r != NULL; r = next) {
      next = r->next;
      r->next = b[r->hash & (n - 1)];
      b[r->hash & (n - 1)] = r;
    }
  }
  wflo__free(reg->buckets, reg->nbuckets * sizeof(*reg->buckets));
  reg->buckets = b;
  reg->nbuckets = n;
}

static wflo__ref_t *table_find(wflo__registry_t *reg, const char *name,
                               size_t h) {
  wflo__ref_t *r;
  if (reg->nbuckets == 0)
    return NULL;
  for (r = reg->buckets[h & (reg->nbuckets - 1)]; r != NULL; r = r->next)
    if (r->hash == h && strcmp(r->name, name) == 0)
      return r;
  return NULL;
}

static int table_insert(wflo__registry_t *reg, const char *name,
                        int (*create)(const char *, void *, wflo__ref_t **),
                        void *arg, size_t h, wflo__ref_t **out) {
  wflo__ref_t *r;
  int rc;
  if (reg->nbuckets == 0) {
    reg->buckets = wflo__calloc(16, sizeof(*reg->buckets));
    if (reg->buckets == NULL)
      return WFLO_E_NOMEM;
    reg->nbuckets = 16;
  }
  rc = create(name, arg, &r);
  if (rc != 0) {
    if (reg->count == 0) {
      wflo__free(reg->buckets, reg->nbuckets * sizeof(*reg->buckets));
      reg->buckets = NULL;
      reg->nbuckets = 0;
    }
    return rc;
  }
  atomic_store(&r->refs, 1);
  r->hash = h;
  r->reg = reg;
  r->next = reg->buckets[h & (reg->nbuckets - 1)];
  reg->buckets[h & (reg->nbuckets - 1)] = r;
  if (++reg->count > reg->nbuckets)
    table_grow(reg);
  *out = r;
  return 0;
}

int wflo__registry_get(wflo__registry_t *reg, const char *name,
                       int (*create)(const char *name, void *arg,
                                     wflo__ref_t **out),
                       void *arg, wflo__ref_t **out, bool *created) {
  size_t h = hash_name(name);
  wflo__ref_t *r;
  int rc = 0;
  uv_once(&reg_once, reg_init);
  uv_mutex_lock(&reg_mu);
  r = table_find(reg, name, h);
  if (r != NULL) {
    wflo__ref_inc(r);
    *created = false;
  } else {
    rc = table_insert(reg, name, create, arg, h, &r);
    *created = rc == 0;
  }
  uv_mutex_unlock(&reg_mu);
  if (rc == 0)
    *out = r;
  return rc;
}

int wflo__registry_snapshot(wflo__registry_t *reg, wflo__ref_t ***arr,
                            size_t *n) {
  size_t i, k = 0;
  wflo__ref_t **a = NULL, *r;
  uv_once(&reg_once, reg_init);
  uv_mutex_lock(&reg_mu);
  if (reg->count > 0) {
    a = wflo__calloc(reg->count, sizeof(*a));
    if (a == NULL) {
      uv_mutex_unlock(&reg_mu);
      return WFLO_E_NOMEM;
    }
    for (i = 0; i < reg->nbuckets; i++)
      for (r = reg->buckets[i]; r != NULL; r = r->next) {
        wflo__ref_inc(r);
        a[k++] = r;
      }
  }
  uv_mutex_unlock(&reg_mu);
  *arr = a;
  *n = k;
  return 0;
}
