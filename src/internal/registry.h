/* Reference counts and named registries for shared objects (breakers, locks,
 * workflows). An object embeds a wflo__ref_t. Private objects (_new) count
 * with a plain atomic; registered ones (_get) are counted under the registry
 * mutex for the 0<->1 transitions, so a lookup can never revive an object
 * that is being destroyed. One mutex serves every registry: lookups are not
 * hot paths. Registries free their tables when their last object goes. */
#ifndef WFLO_INTERNAL_REGISTRY_H
#define WFLO_INTERNAL_REGISTRY_H

#include "common.h"

typedef struct wflo__registry wflo__registry_t;

typedef struct wflo__ref {
  atomic_size_t refs;
  struct wflo__ref *next; /* unused (the table is open-addressing) */
  size_t hash;
  const char *name;      /* owned by the object; NULL for private ones */
  wflo__registry_t *reg; /* NULL for private objects */
} wflo__ref_t;

/* One slot of the open-addressing table: the name's hash next to the
 * object, so a lookup touches only the object whose hash matches. */
typedef struct wflo__reg_slot {
  size_t hash;
  wflo__ref_t *ref; /* NULL: free */
} wflo__reg_slot_t;

struct wflo__registry {
  wflo__reg_slot_t *buckets; /* nbuckets slots, a power of two, <= half full */
  size_t nbuckets;
  size_t count;
};

#define WFLO__REGISTRY_INIT                                                   \
  { NULL, 0, 0 }

/* A private object starts with one reference. */
void wflo__ref_init(wflo__ref_t *r);

/* Takes one more reference; the caller must already hold one. */
void wflo__ref_inc(wflo__ref_t *r);

/* Drops one reference. Returns true when it was the last: the object is
 * already out of its registry and the caller must destroy it. */
bool wflo__ref_dec(wflo__ref_t *r);

/* Finds `name` in reg and takes a reference (*created = false), or calls
 * create(name, arg, &ref) to make the object, registers it with one reference
 * and sets *created = true. create runs under the registry mutex: it must
 * only allocate and initialise (no events, no registry calls). It must set
 * ref->name to its own copy of the name. Returns 0, WFLO_E_NOMEM or what
 * create returned. */
int wflo__registry_get(wflo__registry_t *reg, const char *name,
                       int (*create)(const char *name, void *arg,
                                     wflo__ref_t **out),
                       void *arg, wflo__ref_t **out, bool *created);

/* Takes a reference on every object in reg and returns them in a new array
 * (free with wflo__free(arr, n * sizeof(*arr))); drop each with
 * wflo__ref_dec(). Returns 0 or WFLO_E_NOMEM. *n may be 0 (arr NULL). */
int wflo__registry_snapshot(wflo__registry_t *reg, wflo__ref_t ***arr,
                            size_t *n);

#endif /* WFLO_INTERNAL_REGISTRY_H */
