/* Private helpers for configs (validation, loading from JSON) and for
 * building JSON output (state, stats, events). Shared by every module so that
 * every config behaves alike: first error wins, field named in the message,
 * a config_invalid event, nothing half-built. */
#ifndef WFLO_INTERNAL_CONFIG_H
#define WFLO_INTERNAL_CONFIG_H

#include "common.h"

/* --- validation -------------------------------------------------------------
 * wflo__config_invalid() writes "WHAT.FIELD: REASON" into errbuf, emits a
 * config_invalid event {what, field, reason} and returns WFLO_E_INVAL. */
int wflo__config_invalid(const char *what, const char *field,
                         const char *reason, char *errbuf, size_t len);

/* Returns 0 when v is a valid duration (finite, >= 0, <= WFLO_DURATION_MAX),
 * else wflo__config_invalid(...) with a reason that says which rule broke. */
int wflo__check_duration(const char *what, const char *field, double v,
                         char *errbuf, size_t len);

/* Returns 0 when every code in list[0..n) is negative and (n == 0 || list),
 * else WFLO_E_INVAL via wflo__config_invalid(). */
int wflo__check_err_list(const char *what, const char *field, const int *list,
                         size_t n, char *errbuf, size_t len);

/* --- loading from JSON ------------------------------------------------------
 * A config is loaded by a table of fields. Keys are the C field names.
 * Parsing starts from whatever the struct holds (callers run _init first).
 * Unknown keys and wrong JSON types: WFLO_E_PARSE; well-formed but invalid
 * values (unknown enum name, int out of range, unknown error name): 
 * WFLO_E_INVAL. A JSON integer is accepted where a double is expected.
 *
 * Strings and error lists are allocated with the library allocator and
 * recorded in an owned-slot of the struct's reserved space (`owned_off`,
 * a `void *` slot) so that the config's _clear() can free them. */
typedef enum wflo__field_kind {
  WFLO__F_INT,      /* int */
  WFLO__F_UINT32,   /* uint32_t */
  WFLO__F_DOUBLE,   /* double */
  WFLO__F_DURATION, /* double seconds; JSON null not accepted */
  WFLO__F_BOOL,     /* bool */
  WFLO__F_ENUM,     /* int-sized enum; names in `names`, index = value */
  WFLO__F_STRING,   /* const char *, library copy kept in the owned slot */
  WFLO__F_ERRLIST   /* const int * + size_t count at count_off; owned slot */
} wflo__field_kind_t;

typedef struct wflo__field {
  const char *key;
  wflo__field_kind_t kind;
  size_t off;               /* offset of the field in the struct */
  size_t count_off;         /* ERRLIST: offset of the size_t count */
  size_t owned_off;         /* STRING/ERRLIST: offset of a void * slot */
  const char *const *names; /* ENUM: NULL-terminated, index = value */
} wflo__field_t;

int wflo__config_load(const json_t *j, const char *what,
                      const wflo__field_t *fields, size_t nfields, void *cfg,
                      char *errbuf, size_t len);

/* Frees what wflo__config_load() allocated into the owned slots of the
 * table's fields; resets a field to NULL/0 when it still points at the
 * owned copy (a caller who replaced it keeps theirs). */
void wflo__config_free_owned(const wflo__field_t *fields, size_t nfields,
                             void *cfg);

/* --- JSON output helpers ----------------------------------------------------
 * All return a new reference or NULL on OOM. */
json_t *wflo__json_string(const char *s); /* NULL -> null; bad UTF-8 fixed */
/* Length (1-4) of the valid UTF-8 sequence starting at NUL-terminated s, or
 * 0 when the byte there does not start one (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF). The rule wflo__json_string() uses,
 * for writers of other formats (Prometheus label values). */
size_t wflo__utf8_seq(const unsigned char *s);
json_t *wflo__json_real(double v); /* non-finite -> null */
json_t *wflo__json_err(int err);   /* wflo_err_name(err) */
/* Sets obj[key] = v, stealing v even on failure. Returns 0 or WFLO_E_NOMEM
 * (v NULL too). */
int wflo__json_set(json_t *obj, const char *key, json_t *v);

/* Builds an object from alternating key / json_t* pairs ending in NULL, each
 * value stolen; returns NULL (and frees everything) if any value is NULL.
 * Example: wflo__json_obj("name", wflo__json_string(n), "n",
 *                         json_integer(3), NULL) */
json_t *wflo__json_obj(const char *key, ...);

#endif /* WFLO_INTERNAL_CONFIG_H */
