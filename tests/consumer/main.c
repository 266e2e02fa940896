/* Prints the library's version and fails unless it is the headers' one. */
#include <stdio.h>
#include <string.h>

#include <wflo.h>

int main(void) {
  const char *v = wflo_version();
  printf("libwflo %s (headers %s): %s\n", v, WFLO_VERSION_STRING,
         wflo_strerror(WFLO_E_TIMEOUT));
  if (strcmp(v, WFLO_VERSION_STRING) != 0) {
    fprintf(stderr, "version mismatch: library %s, headers %s\n", v,
            WFLO_VERSION_STRING);
    return 1;
  }
  return 0;
}
