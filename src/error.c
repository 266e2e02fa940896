/* Error codes: names and messages generated from WFLO_ERRNO_MAP; libuv's
 * codes are answered by libuv only for codes in UV_ERRNO_MAP, because
 * uv_strerror()/uv_err_name() allocate (and leak) a string for any other
 * code. Every string returned here is static. */
#include "internal/common.h"

#include <stdio.h>

const char *wflo_version(void) { return WFLO_VERSION_STRING; }

static bool is_wflo_code(int err) {
  return err <= WFLO_ERRNO_BASE && err > WFLO_ERRNO_END;
}

static bool is_uv_code(int err) {
  switch (err) {
#define WFLO__UV_CASE(name, msg) case UV_##name:
    UV_ERRNO_MAP(WFLO__UV_CASE)
#undef WFLO__UV_CASE
    return true;
  default:
    return false;
  }
}

static const char *const wflo_messages[] = {
#define WFLO__MSG_GEN(name, msg) msg,
    WFLO_ERRNO_MAP(WFLO__MSG_GEN)
#undef WFLO__MSG_GEN
};

static const char *const wflo_names[] = {
#define WFLO__NAME_GEN(name, msg) "WFLO_" #name,
    WFLO_ERRNO_MAP(WFLO__NAME_GEN)
#undef WFLO__NAME_GEN
};

const char *wflo_strerror(int err) {
  if (err >= 0)
    return "success";
  if (is_wflo_code(err))
    return wflo_messages[WFLO_ERRNO_BASE - err];
  if (is_uv_code(err))
    return uv_strerror(err);
  return "unknown error";
}

const char *wflo_err_name(int err) {
  if (err >= 0)
    return "OK";
  if (is_wflo_code(err))
    return wflo_names[WFLO_ERRNO_BASE - err];
  if (is_uv_code(err))
    return uv_err_name(err);
  return "UNKNOWN";
}

int wflo__err_from_name(const char *name, int *code) {
  size_t i;
  if (name == NULL)
    return WFLO_E_NOT_FOUND;
  for (i = 0; i < WFLO_ARRAY_SIZE(wflo_names); i++) {
    if (strcmp(name, wflo_names[i]) == 0) {
      *code = WFLO_ERRNO_BASE - (int)i;
      return 0;
    }
  }
  /* "UV_ETIMEDOUT" and "ETIMEDOUT" both name libuv's code (which is -errno
   * on Unix). */
  if (strncmp(name, "UV_", 3) == 0)
    name += 3;
#define WFLO__UV_NAME(n, msg)                                                 \
  if (strcmp(name, #n) == 0) {                                                \
    *code = UV_##n;                                                           \
    return 0;                                                                 \
  }
  UV_ERRNO_MAP(WFLO__UV_NAME)
#undef WFLO__UV_NAME
  return WFLO_E_NOT_FOUND;
}

bool wflo__err_is_verdict(int err) {
  switch (err) {
  case WFLO_E_BREAKER_OPEN:
  case WFLO_E_BUDGET_EXCEEDED:
  case WFLO_E_CANCELED:
  case WFLO_E_INVAL:
  case WFLO_E_NOMEM:
  case WFLO_E_STATE:
  case WFLO_E_QUEUE_FULL:
    return true;
  default:
    return false;
  }
}

void wflo__errbuf(char *errbuf, size_t len, const char *fmt, ...) {
  va_list ap;
  if (errbuf == NULL || len == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(errbuf, len, fmt, ap);
  va_end(ap);
}
