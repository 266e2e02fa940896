/* Memory: every allocation libwflo makes itself goes through the user's
 * allocator hooks (or malloc). Outstanding allocations are counted so that
 * wflo_set_allocator() can refuse to swap allocators under live memory: a
 * block must be released by the allocator that gave it. */
#include "internal/common.h"

#include <errno.h>
#include <stdlib.h>

static void *default_alloc(size_t size, void *ud) {
  WFLO_UNUSED(ud);
  return malloc(size);
}

static void *default_resize(void *p, size_t old_size, size_t new_size,
                            void *ud) {
  WFLO_UNUSED(old_size);
  WFLO_UNUSED(ud);
  return realloc(p, new_size);
}

static void default_release(void *p, size_t size, void *ud) {
  WFLO_UNUSED(size);
  WFLO_UNUSED(ud);
  free(p);
}

/* Read on every allocation, written only while nothing is allocated (so no
 * allocation can race with the write): plain fields are enough. */
static wflo_allocator_t allocator = {default_alloc, default_resize,
                                     default_release, NULL};
static atomic_size_t outstanding;

int wflo_set_allocator(const wflo_allocator_t *a) {
  if (a != NULL &&
      (a->alloc == NULL || a->resize == NULL || a->release == NULL))
    return WFLO_E_INVAL;
  if (atomic_load(&outstanding) != 0)
    return WFLO_E_STATE;
  if (a == NULL) {
    allocator.alloc = default_alloc;
    allocator.resize = default_resize;
    allocator.release = default_release;
    allocator.ud = NULL;
  } else {
    allocator = *a;
  }
  return 0;
}

size_t wflo__mem_outstanding(void) { return atomic_load(&outstanding); }

void *wflo__malloc(size_t size) {
  void *p;
  if (size == 0)
    size = 1; /* a zero-size request still gets a distinct block */
  p = allocator.alloc(size, allocator.ud);
  if (p != NULL)
    atomic_fetch_add_explicit(&outstanding, 1, memory_order_relaxed);
  return p;
}

void *wflo__calloc(size_t n, size_t size) {
  void *p;
  if (size != 0 && n > SIZE_MAX / size)
    return NULL;
  p = wflo__malloc(n * size);
  if (p != NULL)
    memset(p, 0, n * size == 0 ? 1 : n * size);
  return p;
}

void *wflo__realloc(void *p, size_t old_size, size_t new_size) {
  void *q;
  if (p == NULL)
    return wflo__malloc(new_size);
  if (old_size == 0)
    old_size = 1;
  if (new_size == 0)
    new_size = 1;
  q = allocator.resize(p, old_size, new_size, allocator.ud);
  return q; /* the count is unchanged: on failure p is still live */
}

void wflo__free(void *p, size_t size) {
  int saved_errno;
  if (p == NULL)
    return;
  /* A user's release hook must not clobber errno for our callers. */
  saved_errno = errno;
  allocator.release(p, size == 0 ? 1 : size, allocator.ud);
  errno = saved_errno;
  atomic_fetch_sub_explicit(&outstanding, 1, memory_order_relaxed);
}

char *wflo__strdup(const char *s) {
  size_t n;
  char *d;
  if (s == NULL)
    return NULL;
  n = strlen(s) + 1;
  d = wflo__malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

void wflo__strfree(char *s) {
  if (s != NULL)
    wflo__free(s, strlen(s) + 1);
}
