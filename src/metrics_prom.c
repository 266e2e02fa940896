/* Metrics output: the Prometheus text exposition format 0.0.4 and the JSON
 * form. Both render from a snapshot (references on every series) so no
 * libwflo lock is held while the user's writer runs. */
#include "internal/config.h"
#include "internal/metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* --- buffered output ---------------------------------------------------------- */

typedef struct out {
  wflo_metrics_write_fn write;
  void *ud;
  int err;
  size_t len;
  char buf[4096];
} out_t;

static void out_flush(out_t *o) {
  if (o->err == 0 && o->len > 0) {
    int rc = o->write(o->buf, o->len, o->ud);
    if (rc < 0)
      o->err = rc;
  }
  o->len = 0;
}

static void out_put(out_t *o, const char *s, size_t n) {
  while (n > 0 && o->err == 0) {
    size_t k = sizeof(o->buf) - o->len;
    if (k > n)
      k = n;
    memcpy(o->buf + o->len, s, k);
    o->len += k;
    s += k;
    n -= k;
    if (o->len == sizeof(o->buf))
      out_flush(o);
  }
}

static void out_str(out_t *o, const char *s) { out_put(o, s, strlen(s)); }

/* --- numbers ------------------------------------------------------------------ */

/* printf and strtod follow LC_NUMERIC, which an application may have set
 * to a locale with a decimal comma: the exposition must always use '.'.
 * The round trip is checked in the current locale, then whatever run of
 * characters is not part of a number in C syntax (the locale's decimal
 * point, possibly multibyte) is replaced by '.'. */
static void normalize_point(char *buf) {
  char *p = buf, *q;
  while (*p && strchr("0123456789eE+-", *p) != NULL)
    p++;
  if (*p == '\0')
    return;
  q = p;
  while (*q && strchr("0123456789eE+-", *q) == NULL)
    q++;
  *p = '.';
  memmove(p + 1, q, strlen(q) + 1);
}

/* Shortest of %.15g..%.17g that reads back as the same double, so
 * 0.1 is written "0.1" and every value round-trips. */
size_t wflo__metric_fmt_double(char *buf, size_t size, double v) {
  int prec;
  if (isnan(v))
    return (size_t)snprintf(buf, size, "NaN");
  if (isinf(v))
    return (size_t)snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
  for (prec = 15; prec < 17; prec++) {
    snprintf(buf, size, "%.*g", prec, v);
    if (strtod(buf, NULL) == v)
      break;
  }
  snprintf(buf, size, "%.*g", prec, v);
  normalize_point(buf);
  return strlen(buf);
}

static void out_double(out_t *o, double v) {
  char b[48];
  out_put(o, b, wflo__metric_fmt_double(b, sizeof(b), v));
}

static void out_u64(out_t *o, uint64_t v) {
  char b[24];
  int n = snprintf(b, sizeof(b), "%" PRIu64, v);
  out_put(o, b, (size_t)n);
}

/* --- text escaping ------------------------------------------------------------- */

/* Label values escape backslash, double quote and newline; HELP text
 * escapes backslash and newline only (format 0.0.4). Bytes that are not
 * valid UTF-8 become U+FFFD: the format is UTF-8 and Prometheus refuses
 * the whole scrape otherwise. */
static void out_escaped(out_t *o, const char *s, bool quote) {
  const unsigned char *p = (const unsigned char *)s, *run = p;
  size_t k;
  for (; *p; p += k) {
    const char *rep = NULL;
    k = wflo__utf8_seq(p);
    if (k == 0) {
      rep = "\xef\xbf\xbd";
      k = 1;
    } else if (*p == '\\') {
      rep = "\\\\";
    } else if (*p == '\n') {
      rep = "\\n";
    } else if (*p == '"' && quote) {
      rep = "\\\"";
    }
    if (rep != NULL) {
      out_put(o, (const char *)run, (size_t)(p - run));
      out_str(o, rep);
      run = p + k;
    }
  }
  out_put(o, (const char *)run, (size_t)(p - run));
}

/* --- text exposition ----------------------------------------------------------- */

static const char *type_name(wflo__metric_type_t t) {
  return t == WFLO__MT_COUNTER ? "counter"
         : t == WFLO__MT_GAUGE ? "gauge"
                               : "histogram";
}

static void out_family_head(out_t *o, const wflo__metric_family_t *f) {
  out_str(o, "# HELP ");
  out_str(o, f->name);
  out_str(o, " ");
  out_escaped(o, f->help, false);
  out_str(o, "\n# TYPE ");
  out_str(o, f->name);
  out_str(o, " ");
  out_str(o, type_name(f->type));
  out_str(o, "\n");
}

/* name[suffix]{l1="v1",...[,le="bound"]} and a space. */
static void out_sample_name(out_t *o, const wflo__metric_series_t *s,
                            const char *suffix, const char *le) {
  const wflo__metric_family_t *f = s->fam;
  size_t i;
  out_str(o, f->name);
  out_str(o, suffix);
  if (f->nlabels > 0 || le != NULL) {
    out_str(o, "{");
    for (i = 0; i < f->nlabels; i++) {
      if (i > 0)
        out_str(o, ",");
      out_str(o, f->label_names[i]);
      out_str(o, "=\"");
      out_escaped(o, s->labels[i], true);
      out_str(o, "\"");
    }
    if (le != NULL) {
      out_str(o, f->nlabels > 0 ? ",le=\"" : "le=\"");
      out_str(o, le);
      out_str(o, "\"");
    }
    out_str(o, "}");
  }
  out_str(o, " ");
}

static void out_histogram(out_t *o, const wflo__metric_series_t *s) {
  const wflo__metric_family_t *f = s->fam;
  uint64_t cum = 0;
  size_t i;
  char le[48];
  for (i = 0; i <= f->nbounds; i++) {
    cum += wflo__metric_read_cell(s, i);
    if (i < f->nbounds)
      wflo__metric_fmt_double(le, sizeof(le), f->bounds[i]);
    out_sample_name(o, s, "_bucket", i < f->nbounds ? le : "+Inf");
    out_u64(o, cum);
    out_str(o, "\n");
  }
  out_sample_name(o, s, "_sum", NULL);
  out_double(o, wflo__metric_read_sum(s));
  out_str(o, "\n");
  out_sample_name(o, s, "_count", NULL);
  out_u64(o, cum);
  out_str(o, "\n");
}

static void out_series(out_t *o, const wflo__metric_series_t *s) {
  const wflo__metric_family_t *f = s->fam;
  if (f->type == WFLO__MT_HISTOGRAM) {
    out_histogram(o, s);
    return;
  }
  out_sample_name(o, s, "", NULL);
  if (f->type == WFLO__MT_GAUGE)
    out_double(o, wflo__metric_read_gauge(s));
  else if (f->divisor != 0)
    out_double(o, (double)wflo__metric_read_cell(s, 0) / f->divisor);
  else
    out_u64(o, wflo__metric_read_cell(s, 0));
  out_str(o, "\n");
}

int wflo_metrics_write_prometheus(wflo_metrics_write_fn write, void *ud) {
  wflo__metric_snapshot_t snap;
  const wflo__metric_family_t *cur = NULL;
  out_t *o;
  size_t i;
  int rc;

  if (write == NULL)
    return WFLO_E_INVAL;
  /* 4 KiB of buffer: off the stack, callers may be on small stacks. */
  o = wflo__malloc(sizeof(*o));
  if (o == NULL)
    return WFLO_E_NOMEM;
  o->write = write;
  o->ud = ud;
  o->err = 0;
  o->len = 0;
  rc = wflo__metric_snapshot_take(&snap);
  if (rc == 0) {
    for (i = 0; i < snap.n && o->err == 0; i++) {
      if (snap.series[i]->fam != cur) {
        cur = snap.series[i]->fam;
        out_family_head(o, cur);
      }
      out_series(o, snap.series[i]);
    }
    out_flush(o);
    rc = o->err;
    wflo__metric_snapshot_drop(&snap);
  }
  wflo__free(o, sizeof(*o));
  return rc;
}

/* --- the whole text in one buffer ------------------------------------------------ */

/* The block starts with its own size so wflo_metrics_text_free() can give
 * the sized free the library allocator wants. */
typedef struct text_buf {
  char *block;
  size_t cap; /* bytes after the size header */
  size_t len;
} text_buf_t;

#define TEXT_HDR sizeof(size_t)

static int text_write(const char *buf, size_t len, void *ud) {
  text_buf_t *t = ud;
  if (t->cap - t->len < len + 1) {
    size_t cap = t->cap == 0 ? 8192 : t->cap;
    char *nb;
    while (cap - t->len < len + 1)
      cap *= 2;
    nb = wflo__realloc(t->block, t->cap == 0 ? 0 : TEXT_HDR + t->cap,
                       TEXT_HDR + cap);
    if (nb == NULL)
      return WFLO_E_NOMEM;
    t->block = nb;
    t->cap = cap;
  }
  memcpy(t->block + TEXT_HDR + t->len, buf, len);
  t->len += len;
  return 0;
}

char *wflo_metrics_prometheus_text(size_t *len) {
  text_buf_t t = {NULL, 0, 0};
  /* An empty exposition is still a valid (empty) string. */
  if (text_write("", 0, &t) != 0 ||
      wflo_metrics_write_prometheus(text_write, &t) != 0) {
    if (t.block != NULL)
      wflo__free(t.block, TEXT_HDR + t.cap);
    return NULL;
  }
  memcpy(t.block, &t.cap, sizeof(t.cap));
  t.block[TEXT_HDR + t.len] = '\0';
  if (len != NULL)
    *len = t.len;
  return t.block + TEXT_HDR;
}

void wflo_metrics_text_free(char *text) {
  size_t cap;
  if (text == NULL)
    return;
  memcpy(&cap, text - TEXT_HDR, sizeof(cap));
  wflo__free(text - TEXT_HDR, TEXT_HDR + cap);
}

/* --- JSON ------------------------------------------------------------------------- */

static json_t *count_json(uint64_t v) {
  return v <= (uint64_t)INT64_MAX ? json_integer((json_int_t)v)
                                  : json_real((double)v);
}

static json_t *labels_json(const wflo__metric_series_t *s) {
  json_t *o = json_object();
  size_t i;
  for (i = 0; o != NULL && i < s->fam->nlabels; i++) {
    if (wflo__json_set(o, s->fam->label_names[i],
                       wflo__json_string(s->labels[i])) != 0) {
      json_decref(o);
      o = NULL;
    }
  }
  return o;
}

static json_t *buckets_json(const wflo__metric_series_t *s, uint64_t *total) {
  const wflo__metric_family_t *f = s->fam;
  json_t *a = json_array();
  uint64_t cum = 0;
  size_t i;
  for (i = 0; a != NULL && i <= f->nbounds; i++) {
    cum += wflo__metric_read_cell(s, i);
    if (json_array_append_new(
            a, wflo__json_obj("le",
                              i < f->nbounds ? json_real(f->bounds[i])
                                             : json_null(),
                              "count", count_json(cum), NULL)) != 0) {
      json_decref(a);
      a = NULL;
    }
  }
  *total = cum;
  return a;
}

static json_t *series_json(const wflo__metric_series_t *s) {
  const wflo__metric_family_t *f = s->fam;
  json_t *value;
  uint64_t total;
  if (f->type == WFLO__MT_HISTOGRAM) {
    json_t *buckets = buckets_json(s, &total);
    return wflo__json_obj("labels", labels_json(s), "buckets", buckets, "sum",
                          wflo__json_real(wflo__metric_read_sum(s)), "count",
                          count_json(total), NULL);
  }
  if (f->type == WFLO__MT_GAUGE)
    value = wflo__json_real(wflo__metric_read_gauge(s));
  else if (f->divisor != 0)
    value = wflo__json_real((double)wflo__metric_read_cell(s, 0) / f->divisor);
  else
    value = count_json(wflo__metric_read_cell(s, 0));
  return wflo__json_obj("labels", labels_json(s), "value", value, NULL);
}

static json_t *family_json(const wflo__metric_family_t *f) {
  json_t *names = json_array();
  size_t i;
  for (i = 0; names != NULL && i < f->nlabels; i++) {
    if (json_array_append_new(names, json_string(f->label_names[i])) != 0) {
      json_decref(names);
      names = NULL;
    }
  }
  return wflo__json_obj("type", json_string(type_name(f->type)), "help",
                        json_string(f->help), "labels", names, "series",
                        json_array(), NULL);
}

json_t *wflo_metrics_json(void) {
  wflo__metric_snapshot_t snap;
  json_t *metrics = json_object(), *root = NULL, *series = NULL;
  const wflo__metric_family_t *cur = NULL;
  size_t i;

  if (metrics == NULL || wflo__metric_snapshot_take(&snap) != 0) {
    json_decref(metrics);
    return NULL;
  }
  for (i = 0; i < WFLO__M_COUNT; i++) {
    const wflo__metric_family_t *f = wflo__metric_family(i);
    if (wflo__json_set(metrics, f->name, family_json(f)) != 0)
      goto fail;
  }
  for (i = 0; i < snap.n; i++) {
    const wflo__metric_series_t *s = snap.series[i];
    if (s->fam != cur) {
      cur = s->fam;
      series = json_object_get(json_object_get(metrics, cur->name), "series");
    }
    if (json_array_append_new(series, series_json(s)) != 0)
      goto fail;
  }
  root = wflo__json_obj("enabled", json_boolean(wflo_metrics_enabled()),
                        "metrics", metrics, NULL);
  metrics = NULL; /* stolen, even on failure */
fail:
  json_decref(metrics);
  wflo__metric_snapshot_drop(&snap);
  return root;
}
