/* Named registries: an open-addressing hash table per registry (linear
 * probing, at most half full, grown by doubling), all behind one mutex. See
 * internal/registry.h.
 *
 * Why open addressing: with a million names the table and the objects are
 * far out of cache, and a lookup costs its cache misses. A chained table
 * misses on the bucket and then on every node of the chain (about 1.5 at a
 * load of 1) just to compare hashes; slots that keep the hash beside the
 * pointer miss on the slot's line and then only on the object that
 * matches. */
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

static void table_free(wflo__registry_t *reg) {
  wflo__free(reg->buckets, reg->nbuckets * sizeof(*reg->buckets));
  reg->buckets = NULL;
  reg->nbuckets = 0;
}

/* Deletion by backward shift: the entries after the hole that would no
 * longer be found (their home slot is not cyclically in (hole, j]) move
 * into it, so probing never needs tombstones. */
static void table_remove(wflo__registry_t *reg, wflo__ref_t *r) {
  wflo__reg_slot_t *t = reg->buckets;
  size_t mask = reg->nbuckets - 1, i = r->hash & mask, j, home;
  while (t[i].ref != r)
    i = (i + 1) & mask;
  for (j = (i + 1) & mask; t[j].ref != NULL; j = (j + 1) & mask) {
    home = t[j].hash & mask;
    if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
      continue;
    t[i] = t[j];
    i = j;
  }
  t[i].ref = NULL;
  if (--reg->count == 0)
    table_free(reg);
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

static void table_place(wflo__reg_slot_t *t, size_t mask, size_t h,
                        wflo__ref_t *r) {
  size_t i = h & mask;
  while (t[i].ref != NULL)
    i = (i + 1) & mask;
  t[i].hash = h;
  t[i].ref = r;
}

static int table_grow(wflo__registry_t *reg) {
  size_t n = reg->nbuckets * 2, i;
  wflo__reg_slot_t *t = wflo__calloc(n, sizeof(*t));
  if (t == NULL)
    return WFLO_E_NOMEM;
  for (i = 0; i < reg->nbuckets; i++)
    if (reg->buckets[i].ref != NULL)
      table_place(t, n - 1, reg->buckets[i].hash, reg->buckets[i].ref);
  wflo__free(reg->buckets, reg->nbuckets * sizeof(*reg->buckets));
  reg->buckets = t;
  reg->nbuckets = n;
  return 0;
}

static wflo__ref_t *table_find(wflo__registry_t *reg, const char *name,
                               size_t h) {
  size_t mask, i;
  if (reg->nbuckets == 0)
    return NULL;
  mask = reg->nbuckets - 1;
  for (i = h & mask; reg->buckets[i].ref != NULL; i = (i + 1) & mask)
    if (reg->buckets[i].hash == h &&
        strcmp(reg->buckets[i].ref->name, name) == 0)
      return reg->buckets[i].ref;
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
  /* Keep the table at most half full. A failed grow is harmless while a
   * free slot remains after this insert; a full table would be refused. */
  if ((reg->count + 1) * 2 > reg->nbuckets && table_grow(reg) != 0 &&
      reg->count + 2 > reg->nbuckets)
    return WFLO_E_NOMEM;
  rc = create(name, arg, &r);
  if (rc != 0) {
    if (reg->count == 0)
      table_free(reg);
    return rc;
  }
  atomic_store(&r->refs, 1);
  r->hash = h;
  r->reg = reg;
  r->next = NULL;
  table_place(reg->buckets, reg->nbuckets - 1, h, r);
  reg->count++;
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
      if ((r = reg->buckets[i].ref) != NULL) {
        wflo__ref_inc(r);
        a[k++] = r;
      }
  }
  uv_mutex_unlock(&reg_mu);
  *arr = a;
  *n = k;
  return 0;
}
