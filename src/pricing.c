/* The pricing table: built-in example entries plus models loaded from JSON.
 *
 * Prices are kept as integer pico-dollars per token. A price in USD per
 * million tokens with up to 6 decimals is an integer number of micro-dollars
 * per million tokens, which is the same number of pico-dollars per token, so
 * every cost is an exact integer and sums never drift.
 *
 * Concurrency: the loaded table is immutable once built and is swapped under
 * a mutex; a lookup copies the three prices out under the same mutex, so a
 * reload never frees an entry a caller is still using and no reader sees a
 * half-loaded table. Lookups happen once per LLM call (milliseconds to
 * seconds of network), so a mutex is cheap enough and simpler than RCU. */
#include "internal/config.h"
#include "internal/workflow.h"

#include <stdio.h>

/* Largest price accepted, USD per million tokens: 1e12 pico per token. */
#define PRICE_MAX 1e6

/* Example entries: list prices (USD per million tokens) of a few common
 * models when this was written. They are examples only: prices change and
 * differ by contract, so load your own with wflo_pricing_load_json() (a
 * loaded model overrides a built-in one of the same name). max_call_usd is
 * what one call reserves before it runs: size it to your largest call.
 * Written in pico-dollars per token (= micro-USD per million tokens). */
static const struct builtin {
  const char *name;
  wflo__price_t price;
} builtins[] = {
    /* clang-format off */
    /* name                 input       output      max_call */
    {"gpt-4o",            {2500000,   10000000,   100000000000}}, /* $0.10 */
    {"gpt-4o-mini",       {150000,    600000,     10000000000}},  /* $0.01 */
    {"gpt-4.1",           {2000000,   8000000,    100000000000}},
    {"gpt-4.1-mini",      {400000,    1600000,    20000000000}},
    {"claude-sonnet-4",   {3000000,   15000000,   150000000000}},
    {"claude-3-5-haiku",  {800000,    4000000,    40000000000}},
    {"claude-opus-4",     {15000000,  75000000,   750000000000}},
    {"gemini-2.0-flash",  {100000,    400000,     10000000000}},
    /* clang-format on */
};

typedef struct entry {
  char *name;
  wflo__price_t price;
} entry_t;

typedef struct table {
  entry_t *items;
  size_t n;
} table_t;

static uv_once_t pricing_once = UV_ONCE_INIT;
static uv_mutex_t pricing_mu;
static table_t loaded; /* under pricing_mu */

static void pricing_init(void) { uv_mutex_init(&pricing_mu); }

static void table_free(table_t *t) {
  size_t i;
  for (i = 0; i < t->n; i++)
    wflo__strfree(t->items[i].name);
  wflo__free(t->items, t->n * sizeof(*t->items));
  t->items = NULL;
  t->n = 0;
}

static const entry_t *table_find(const table_t *t, const char *name) {
  size_t i;
  for (i = 0; i < t->n; i++)
    if (strcmp(t->items[i].name, name) == 0)
      return &t->items[i];
  return NULL;
}

int wflo__pricing_lookup(const char *model, wflo__price_t *out) {
  const entry_t *e;
  size_t i;
  int rc = WFLO_E_NOT_FOUND;
  if (model == NULL || out == NULL)
    return WFLO_E_INVAL;
  uv_once(&pricing_once, pricing_init);
  uv_mutex_lock(&pricing_mu);
  e = table_find(&loaded, model);
  if (e != NULL) {
    *out = e->price;
    rc = 0;
  }
  uv_mutex_unlock(&pricing_mu);
  for (i = 0; rc != 0 && i < WFLO_ARRAY_SIZE(builtins); i++) {
    if (strcmp(builtins[i].name, model) == 0) {
      *out = builtins[i].price;
      rc = 0;
    }
  }
  return rc;
}

/* a * b, saturating. */
static uint64_t sat_mul(uint64_t a, uint64_t b) {
  return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

uint64_t wflo__pricing_cost_pico(const wflo__price_t *p,
                                 const wflo_llm_usage_t *u) {
  uint64_t in = sat_mul(u->prompt_tokens, p->input_pico);
  uint64_t out = sat_mul(u->completion_tokens, p->output_pico);
  return in > UINT64_MAX - out ? UINT64_MAX : in + out;
}

int wflo_pricing_cost(const char *model, const wflo_llm_usage_t *u,
                      double *usd) {
  wflo__price_t p;
  int rc;
  if (u == NULL || usd == NULL)
    return WFLO_E_INVAL;
  rc = wflo__pricing_lookup(model, &p);
  if (rc != 0)
    return rc;
  *usd = (double)wflo__pricing_cost_pico(&p, u) / 1e12;
  return 0;
}

void wflo_pricing_reset(void) {
  table_t old;
  uv_once(&pricing_once, pricing_init);
  uv_mutex_lock(&pricing_mu);
  old = loaded;
  loaded.items = NULL;
  loaded.n = 0;
  uv_mutex_unlock(&pricing_mu);
  table_free(&old);
}

/* --- loading ------------------------------------------------------------- */

typedef struct model_cfg {
  double input_per_mtok, output_per_mtok, max_call_usd;
} model_cfg_t;

static const wflo__field_t model_fields[] = {
    {"input_per_mtok", WFLO__F_DOUBLE, offsetof(model_cfg_t, input_per_mtok),
     0, 0, NULL},
    {"output_per_mtok", WFLO__F_DOUBLE, offsetof(model_cfg_t, output_per_mtok),
     0, 0, NULL},
    {"max_call_usd", WFLO__F_DOUBLE, offsetof(model_cfg_t, max_call_usd), 0, 0,
     NULL},
};

/* A price with at most 6 decimals, as exact pico per token. */
static int price_to_pico(const char *what, const char *key, double v,
                         uint64_t *out, char *errbuf, size_t len) {
  char field[300];
  double micro;
  snprintf(field, sizeof(field), "%s.%s", what, key);
  if (!(v >= 0.0 && v <= PRICE_MAX))
    return wflo__config_invalid("pricing", field,
                                "must be a finite price in [0, 1e6] USD per "
                                "million tokens",
                                errbuf, len);
  micro = v * 1e6;
  /* 1e-3 micro-USD of slack absorbs the binary representation of decimal
   * inputs (0.15 * 1e6 is 150000.00000000003), far below a real decimal. */
  if (fabs(micro - nearbyint(micro)) > 1e-3)
    return wflo__config_invalid("pricing", field,
                                "more than 6 decimals: costs would not be "
                                "exact",
                                errbuf, len);
  *out = (uint64_t)nearbyint(micro);
  return 0;
}

static int parse_model(const char *name, const json_t *v, entry_t *e,
                       char *errbuf, size_t len) {
  char what[256];
  model_cfg_t m = {NAN, NAN, NAN};
  size_t i;
  int rc;
  snprintf(what, sizeof(what), "pricing.models.%s", name);
  if (name[0] == '\0')
    return wflo__config_invalid("pricing", "models", "empty model name",
                                errbuf, len);
  rc = wflo__config_load(v, what, model_fields, WFLO_ARRAY_SIZE(model_fields),
                         &m, errbuf, len);
  if (rc != 0)
    return rc;
  for (i = 0; i < WFLO_ARRAY_SIZE(model_fields); i++) {
    double d = *(const double *)(const void *)((const char *)&m +
                                               model_fields[i].off);
    if (isnan(d)) {
      wflo__errbuf(errbuf, len, "%s.%s: missing key", what,
                   model_fields[i].key);
      return WFLO_E_PARSE;
    }
  }
  what[0] = '\0';
  snprintf(what, sizeof(what), "models.%s", name);
  rc = price_to_pico(what, "input_per_mtok", m.input_per_mtok,
                     &e->price.input_pico, errbuf, len);
  if (rc == 0)
    rc = price_to_pico(what, "output_per_mtok", m.output_per_mtok,
                       &e->price.output_pico, errbuf, len);
  if (rc != 0)
    return rc;
  if (!(m.max_call_usd >= 0.0 && m.max_call_usd <= WFLO_BUDGET_MAX)) {
    char field[300];
    snprintf(field, sizeof(field), "%s.max_call_usd", what);
    return wflo__config_invalid("pricing", field,
                                "must be an amount in [0, WFLO_BUDGET_MAX]",
                                errbuf, len);
  }
  e->price.max_call_pico = (uint64_t)(m.max_call_usd * 1e12 + 0.5);
  return 0;
}

/* Validates the document's shape; returns its "models" object. */
static int check_root(const json_t *j, const json_t **models, char *errbuf,
                      size_t len) {
  const char *key;
  json_t *v;
  if (j == NULL) {
    wflo__errbuf(errbuf, len, "pricing: NULL argument");
    return WFLO_E_INVAL;
  }
  if (!json_is_object(j)) {
    wflo__errbuf(errbuf, len, "pricing: expected a JSON object");
    return WFLO_E_PARSE;
  }
  json_object_foreach((json_t *)(uintptr_t)j, key, v) {
    if (strcmp(key, "models") != 0) {
      wflo__errbuf(errbuf, len, "pricing.%s: unknown key", key);
      return WFLO_E_PARSE;
    }
  }
  *models = json_object_get(j, "models");
  if (*models == NULL || !json_is_object(*models)) {
    wflo__errbuf(errbuf, len, "pricing.models: %s",
                 *models == NULL ? "missing key" : "expected an object");
    return WFLO_E_PARSE;
  }
  return 0;
}

/* The merged table: the current loaded entries, overridden or extended by
 * the new ones (whose names are unique: they are keys of one JSON object).
 * Built aside at its exact size, so a failure leaves the live table alone
 * and table_free() gives back exactly what was allocated. */
static int build_merged(const table_t *cur, const entry_t *add, size_t nadd,
                        table_t *out) {
  size_t i, count = cur->n;
  out->items = NULL;
  out->n = 0;
  for (i = 0; i < nadd; i++)
    if (table_find(cur, add[i].name) == NULL)
      count++;
  if (count == 0)
    return 0;
  out->items = wflo__calloc(count, sizeof(*out->items));
  if (out->items == NULL)
    return WFLO_E_NOMEM;
  for (i = 0; i < cur->n + nadd; i++) {
    const entry_t *src = i < cur->n ? &cur->items[i] : &add[i - cur->n];
    entry_t *dst = NULL;
    if (i >= cur->n)
      dst = (entry_t *)(uintptr_t)table_find(out, src->name);
    if (dst == NULL) {
      dst = &out->items[out->n];
      dst->name = wflo__strdup(src->name);
      if (dst->name == NULL) {
        /* table_free() frees out->n names but the full block. */
        size_t k;
        for (k = 0; k < out->n; k++)
          wflo__strfree(out->items[k].name);
        wflo__free(out->items, count * sizeof(*out->items));
        out->items = NULL;
        out->n = 0;
        return WFLO_E_NOMEM;
      }
      out->n++;
    }
    dst->price = src->price;
  }
  return 0;
}

int wflo_pricing_load_json(const json_t *j, char *errbuf, size_t len) {
  const json_t *models = NULL;
  const char *name;
  json_t *v;
  entry_t *add;
  table_t merged, old;
  size_t nadd, i = 0;
  int rc = check_root(j, &models, errbuf, len);
  if (rc != 0)
    return rc;
  nadd = json_object_size(models);
  /* Parse every model into a scratch array first (names borrowed from j),
   * so that nothing changes unless all of them are valid. */
  add = wflo__calloc(nadd == 0 ? 1 : nadd, sizeof(*add));
  if (add == NULL)
    return WFLO_E_NOMEM;
  json_object_foreach((json_t *)(uintptr_t)models, name, v) {
    add[i].name = (char *)(uintptr_t)name;
    rc = parse_model(name, v, &add[i], errbuf, len);
    if (rc != 0)
      goto done;
    i++;
  }
  uv_once(&pricing_once, pricing_init);
  uv_mutex_lock(&pricing_mu);
  rc = build_merged(&loaded, add, nadd, &merged);
  if (rc == 0) {
    old = loaded;
    loaded = merged;
  }
  uv_mutex_unlock(&pricing_mu);
  if (rc == 0)
    table_free(&old);
  else
    wflo__errbuf(errbuf, len, "pricing: out of memory");
done:
  wflo__free(add, (nadd == 0 ? 1 : nadd) * sizeof(*add));
  return rc;
}

int wflo_pricing_load_file(const char *path, char *errbuf, size_t len) {
  json_error_t err;
  json_t *j;
  int rc;
  if (path == NULL) {
    wflo__errbuf(errbuf, len, "pricing: NULL path");
    return WFLO_E_INVAL;
  }
  j = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
  if (j == NULL) {
    if (json_error_code(&err) == json_error_cannot_open_file) {
      wflo__errbuf(errbuf, len, "pricing: %s", err.text);
      return WFLO_E_NOT_FOUND;
    }
    if (json_error_code(&err) == json_error_out_of_memory)
      return WFLO_E_NOMEM;
    wflo__errbuf(errbuf, len, "pricing: %s:%d:%d: %s", path, err.line,
                 err.column, err.text);
    return WFLO_E_PARSE;
  }
  rc = wflo_pricing_load_json(j, errbuf, len);
  json_decref(j);
  return rc;
}
