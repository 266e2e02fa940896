/* Config validation, table-driven loading from JSON, and JSON output helpers
 * shared by every module. */
#include "internal/config.h"

#include <stdio.h>

/* --- validation ------------------------------------------------------------ */

int wflo__config_invalid(const char *what, const char *field,
                         const char *reason, char *errbuf, size_t len) {
  wflo__errbuf(errbuf, len, "%s.%s: %s", what, field, reason);
  if (wflo__event_on(WFLO_LOG_ERROR))
    wflo__emit("config_invalid", WFLO_LOG_ERROR,
               wflo__json_obj("what", wflo__json_string(what), "field",
                              wflo__json_string(field), "reason",
                              wflo__json_string(reason), NULL));
  return WFLO_E_INVAL;
}

int wflo__check_duration(const char *what, const char *field, double v,
                         char *errbuf, size_t len) {
  const char *reason;
  if (wflo__duration_ok(v))
    return 0;
  if (isnan(v))
    reason = "must be a number, not NaN";
  else if (isinf(v))
    reason = "must be finite";
  else if (v < 0)
    reason = "must not be negative";
  else
    reason = "must not exceed WFLO_DURATION_MAX (1e9 seconds)";
  return wflo__config_invalid(what, field, reason, errbuf, len);
}

int wflo__check_err_list(const char *what, const char *field, const int *list,
                         size_t n, char *errbuf, size_t len) {
  size_t i;
  if (n > 0 && list == NULL)
    return wflo__config_invalid(what, field, "count is set but list is NULL",
                                errbuf, len);
  for (i = 0; i < n; i++)
    if (list[i] >= 0)
      return wflo__config_invalid(what, field, "error codes must be negative",
                                  errbuf, len);
  return 0;
}

/* --- JSON output helpers ----------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if invalid. Follows
 * RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s) {
  unsigned char c = s[0];
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    return (s[1] & 0xc0) == 0x80 ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 &&
                   (s[3] & 0xc0) == 0x80
               ? 4
               : 0;
  }
  return 0;
}

size_t wflo__utf8_seq(const unsigned char *s) { return utf8_seq(s); }

json_t *wflo__json_string(const char *s) {
  const unsigned char *p;
  size_t bad = 0, n = 0, k, out;
  char *fixed;
  json_t *j;

  if (s == NULL)
    return json_null();
  for (p = (const unsigned char *)s; *p; p += k, n += k) {
    k = utf8_seq(p);
    if (k == 0) {
      k = 1;
      bad++;
    }
  }
  if (bad == 0)
    return json_stringn(s, n);
  /* Replace each invalid byte with U+FFFD (3 bytes) so no name silently
   * vanishes from a log line. jansson allocates the final string anyway, so
   * a temporary from our allocator is fine. */
  fixed = wflo__malloc(n + bad * 2 + 1);
  if (fixed == NULL)
    return NULL;
  out = 0;
  for (p = (const unsigned char *)s; *p; p += k) {
    k = utf8_seq(p);
    if (k == 0) {
      memcpy(fixed + out, "\xef\xbf\xbd", 3);
      out += 3;
      k = 1;
    } else {
      memcpy(fixed + out, p, k);
      out += k;
    }
  }
  fixed[out] = '\0';
  j = json_stringn(fixed, out);
  wflo__free(fixed, n + bad * 2 + 1);
  return j;
}

json_t *wflo__json_real(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

json_t *wflo__json_err(int err) { return json_string(wflo_err_name(err)); }

int wflo__json_set(json_t *obj, const char *key, json_t *v) {
  if (v == NULL)
    return WFLO_E_NOMEM;
  return json_object_set_new(obj, key, v) == 0 ? 0 : WFLO_E_NOMEM;
}

json_t *wflo__json_obj(const char *key, ...) {
  va_list ap;
  json_t *obj = json_object();
  bool failed = obj == NULL;
  const char *k;

  va_start(ap, key);
  for (k = key; k != NULL; k = va_arg(ap, const char *)) {
    json_t *v = va_arg(ap, json_t *);
    /* Every value is stolen, even after a failure; wflo__json_set() has
     * already released v when it fails (json_object_set_new does). */
    if (failed)
      json_decref(v);
    else if (wflo__json_set(obj, k, v) != 0)
      failed = true;
  }
  va_end(ap);
  if (failed) {
    json_decref(obj);
    return NULL;
  }
  return obj;
}

/* --- loading from JSON ------------------------------------------------------- */

#define FIELD_AT(cfg, off, type) ((type *)(void *)((char *)(cfg) + (off)))

static int parse_error(const char *what, const char *key, const char *reason,
                       char *errbuf, size_t len) {
  wflo__errbuf(errbuf, len, "%s.%s: %s", what, key, reason);
  return WFLO_E_PARSE;
}

static int load_int(const wflo__field_t *f, const json_t *v, const char *what,
                    void *cfg, char *errbuf, size_t len) {
  json_int_t i;
  if (!json_is_integer(v))
    return parse_error(what, f->key, "expected an integer", errbuf, len);
  i = json_integer_value(v);
  if (f->kind == WFLO__F_INT) {
    if (i < INT_MIN || i > INT_MAX)
      return wflo__config_invalid(what, f->key, "integer out of range", errbuf,
                                  len);
    *FIELD_AT(cfg, f->off, int) = (int)i;
  } else {
    if (i < 0 || i > (json_int_t)UINT32_MAX)
      return wflo__config_invalid(what, f->key, "integer out of range", errbuf,
                                  len);
    *FIELD_AT(cfg, f->off, uint32_t) = (uint32_t)i;
  }
  return 0;
}

static int load_enum(const wflo__field_t *f, const json_t *v, const char *what,
                     void *cfg, char *errbuf, size_t len) {
  const char *s;
  int i;
  if (!json_is_string(v))
    return parse_error(what, f->key, "expected a string", errbuf, len);
  s = json_string_value(v);
  for (i = 0; f->names[i] != NULL; i++) {
    if (strcmp(s, f->names[i]) == 0) {
      *FIELD_AT(cfg, f->off, int) = i;
      return 0;
    }
  }
  return wflo__config_invalid(what, f->key, "unknown name", errbuf, len);
}

static void free_owned_string(const wflo__field_t *f, void *cfg) {
  char **slot = FIELD_AT(cfg, f->owned_off, char *);
  const char **field = FIELD_AT(cfg, f->off, const char *);
  if (*slot == NULL)
    return;
  if (*field == *slot)
    *field = NULL;
  wflo__strfree(*slot);
  *slot = NULL;
}

/* The owned error list is stored with its length in front so it can be
 * freed with its size even after the caller changed the count field. */
static void free_owned_list(const wflo__field_t *f, void *cfg) {
  size_t **slot = FIELD_AT(cfg, f->owned_off, size_t *);
  const int **field = FIELD_AT(cfg, f->off, const int *);
  size_t *block = *slot, n;
  if (block == NULL)
    return;
  n = block[0];
  if (*field == (const int *)(void *)(block + 1)) {
    *field = NULL;
    *FIELD_AT(cfg, f->count_off, size_t) = 0;
  }
  wflo__free(block, sizeof(size_t) + n * sizeof(int));
  *slot = NULL;
}

static int load_string(const wflo__field_t *f, const json_t *v,
                       const char *what, void *cfg, char *errbuf, size_t len) {
  char *copy;
  if (!json_is_string(v))
    return parse_error(what, f->key, "expected a string", errbuf, len);
  copy = wflo__strdup(json_string_value(v));
  if (copy == NULL)
    return WFLO_E_NOMEM;
  free_owned_string(f, cfg);
  *FIELD_AT(cfg, f->owned_off, char *) = copy;
  *FIELD_AT(cfg, f->off, const char *) = copy;
  return 0;
}

static int list_entry(const json_t *e, const char *what, const char *key,
                      int *code, char *errbuf, size_t len) {
  if (json_is_integer(e)) {
    json_int_t i = json_integer_value(e);
    if (i >= 0 || i < INT_MIN)
      return wflo__config_invalid(what, key, "error codes must be negative",
                                  errbuf, len);
    *code = (int)i;
    return 0;
  }
  if (!json_is_string(e))
    return parse_error(what, key, "expected error codes or names", errbuf,
                       len);
  if (wflo__err_from_name(json_string_value(e), code) != 0)
    return wflo__config_invalid(what, key, "unknown error name", errbuf, len);
  return 0;
}

static int load_list(const wflo__field_t *f, const json_t *v, const char *what,
                     void *cfg, char *errbuf, size_t len) {
  size_t n, i, *block;
  int rc, *codes;
  if (!json_is_array(v))
    return parse_error(what, f->key, "expected an array", errbuf, len);
  n = json_array_size(v);
  block = wflo__malloc(sizeof(size_t) + n * sizeof(int));
  if (block == NULL)
    return WFLO_E_NOMEM;
  block[0] = n;
  codes = (int *)(void *)(block + 1);
  for (i = 0; i < n; i++) {
    rc =
        list_entry(json_array_get(v, i), what, f->key, &codes[i], errbuf, len);
    if (rc != 0) {
      wflo__free(block, sizeof(size_t) + n * sizeof(int));
      return rc;
    }
  }
  free_owned_list(f, cfg);
  *FIELD_AT(cfg, f->owned_off, size_t *) = block;
  *FIELD_AT(cfg, f->off, const int *) = codes;
  *FIELD_AT(cfg, f->count_off, size_t) = n;
  return 0;
}

static int load_field(const wflo__field_t *f, const json_t *v,
                      const char *what, void *cfg, char *errbuf, size_t len) {
  switch (f->kind) {
  case WFLO__F_INT:
  case WFLO__F_UINT32:
    return load_int(f, v, what, cfg, errbuf, len);
  case WFLO__F_DOUBLE:
  case WFLO__F_DURATION:
    if (!json_is_number(v))
      return parse_error(what, f->key, "expected a number", errbuf, len);
    *FIELD_AT(cfg, f->off, double) = json_number_value(v);
    if (f->kind == WFLO__F_DURATION)
      return wflo__check_duration(what, f->key, json_number_value(v), errbuf,
                                  len);
    return 0;
  case WFLO__F_BOOL:
    if (!json_is_boolean(v))
      return parse_error(what, f->key, "expected true or false", errbuf, len);
    *FIELD_AT(cfg, f->off, bool) = json_is_true(v);
    return 0;
  case WFLO__F_ENUM:
    return load_enum(f, v, what, cfg, errbuf, len);
  case WFLO__F_STRING:
    return load_string(f, v, what, cfg, errbuf, len);
  case WFLO__F_ERRLIST:
    return load_list(f, v, what, cfg, errbuf, len);
  }
  return WFLO_E_INVAL;
}

int wflo__config_load(const json_t *j, const char *what,
                      const wflo__field_t *fields, size_t nfields, void *cfg,
                      char *errbuf, size_t len) {
  const char *key;
  json_t *v;
  size_t i;
  int rc;

  if (j == NULL || cfg == NULL) {
    wflo__errbuf(errbuf, len, "%s: NULL argument", what);
    return WFLO_E_INVAL;
  }
  if (!json_is_object(j)) {
    wflo__errbuf(errbuf, len, "%s: expected a JSON object", what);
    return WFLO_E_PARSE;
  }
  json_object_foreach((json_t *)(uintptr_t)j, key, v) {
    for (i = 0; i < nfields; i++)
      if (strcmp(key, fields[i].key) == 0)
        break;
    if (i == nfields)
      return parse_error(what, key, "unknown key", errbuf, len);
    rc = load_field(&fields[i], v, what, cfg, errbuf, len);
    if (rc != 0)
      return rc;
  }
  return 0;
}

void wflo__config_free_owned(const wflo__field_t *fields, size_t nfields,
                             void *cfg) {
  size_t i;
  for (i = 0; i < nfields; i++) {
    if (fields[i].kind == WFLO__F_STRING)
      free_owned_string(&fields[i], cfg);
    else if (fields[i].kind == WFLO__F_ERRLIST)
      free_owned_list(&fields[i], cfg);
  }
}
