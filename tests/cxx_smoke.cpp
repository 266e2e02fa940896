// Compiled as C++11 and linked to the shared library: the public header is
// usable from C++ and the C symbols resolve (extern "C" is in place).
#include <wflo.h>

#include <cstdio>
#include <cstring>

int main() {
  const char *v = wflo_version();
  std::printf("libwflo %s from C++ (headers %s)\n", v, WFLO_VERSION_STRING);
  if (std::strcmp(v, WFLO_VERSION_STRING) != 0)
    return 1;
  if (std::strcmp(wflo_err_name(WFLO_E_TIMEOUT), "WFLO_E_TIMEOUT") != 0)
    return 1;
  wflo_log_level_t level = wflo_get_log_level();
  return level >= WFLO_LOG_DEBUG && level <= WFLO_LOG_OFF ? 0 : 1;
}
