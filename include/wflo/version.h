/* libwflo version macros.
 *
 * This header is the single source of truth for the version: CMake parses
 * WFLO_VERSION_MAJOR/MINOR/PATCH from it for project(VERSION) and SOVERSION.
 *
 * ABI rule: within one major version, symbols and struct sizes are only ever
 * added (config structs grow into their reserved space), never changed or
 * removed; error codes are only ever appended. A change that breaks the ABI
 * bumps WFLO_VERSION_MAJOR and so the SONAME.
 */
#ifndef WFLO_VERSION_H
#define WFLO_VERSION_H

#define WFLO_VERSION_MAJOR 0
#define WFLO_VERSION_MINOR 1
#define WFLO_VERSION_PATCH 0

#define WFLO_VERSION_HEX                                                      \
  ((WFLO_VERSION_MAJOR << 16) | (WFLO_VERSION_MINOR << 8) |                   \
   (WFLO_VERSION_PATCH))

#define WFLO_STRINGIFY_(x) #x
#define WFLO_STRINGIFY(x) WFLO_STRINGIFY_(x)
#define WFLO_VERSION_STRING                                                   \
  WFLO_STRINGIFY(WFLO_VERSION_MAJOR)                                          \
  "." WFLO_STRINGIFY(WFLO_VERSION_MINOR) "." WFLO_STRINGIFY(WFLO_VERSION_PATCH)

#endif /* WFLO_VERSION_H */
