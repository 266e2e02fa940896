# Warnings and sanitizers for libwflo's own targets (library, tests, examples,
# benches). Everything here is target-scoped: nothing touches the global
# CMAKE_<LANG>_FLAGS, so a parent project that vendors libwflo keeps its flags.
#
#   wflo_target_defaults(<target>)  warnings (+ -Werror under WFLO_WERROR) and
#                                   the WFLO_SANITIZE flags
#   wflo_target_warnings(<target>)  warnings only
#   wflo_target_sanitize(<target>)  sanitizer compile and link options only

include_guard(GLOBAL)
include(CheckCCompilerFlag)
include(CheckCSourceCompiles)

# -Wconversion is deliberately absent: libuv's and jansson's headers (inline
# functions, macros expanded in our code) make it fire on lines we cannot
# change, and the noise would hide real findings. -Wpedantic is left to the
# header checks (tests/CMakeLists.txt), where it matters for users.
set(WFLO_WARNING_CANDIDATES
    -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
    -Wpointer-arith -Wformat=2 -Wundef -Wcast-align -Wvla)
# Warnings that only make sense for C (the C++ compiler rejects or ignores
# them); the rest is probed for C++ as well when CXX is enabled.
set(WFLO_C_ONLY_WARNINGS -Wstrict-prototypes -Wmissing-prototypes)

set(WFLO_C_WARNINGS "")
foreach(flag IN LISTS WFLO_WARNING_CANDIDATES)
  string(MAKE_C_IDENTIFIER "WFLO_C_HAS${flag}" var)
  check_c_compiler_flag("${flag}" ${var})
  if(${var})
    list(APPEND WFLO_C_WARNINGS "${flag}")
  endif()
endforeach()

set(WFLO_CXX_WARNINGS "")
if(CMAKE_CXX_COMPILER)
  include(CheckCXXCompilerFlag)
  foreach(flag IN LISTS WFLO_WARNING_CANDIDATES)
    if(flag IN_LIST WFLO_C_ONLY_WARNINGS)
      continue()
    endif()
    string(MAKE_C_IDENTIFIER "WFLO_CXX_HAS${flag}" var)
    check_cxx_compiler_flag("${flag}" ${var})
    if(${var})
      list(APPEND WFLO_CXX_WARNINGS "${flag}")
    endif()
  endforeach()
endif()

function(wflo_target_warnings tgt)
  foreach(flag IN LISTS WFLO_C_WARNINGS)
    target_compile_options(${tgt} PRIVATE "$<$<COMPILE_LANGUAGE:C>:${flag}>")
  endforeach()
  foreach(flag IN LISTS WFLO_CXX_WARNINGS)
    target_compile_options(${tgt} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:${flag}>")
  endforeach()
  if(WFLO_WERROR)
    target_compile_options(${tgt} PRIVATE -Werror)
  endif()
endfunction()

# WFLO_SANITIZE is validated once: a value the compiler cannot build and link
# fails the configure step instead of every compile.
set(WFLO_SANITIZE_FLAGS "")
if(WFLO_SANITIZE)
  set(WFLO_SANITIZE_FLAGS
      "-fsanitize=${WFLO_SANITIZE}" -fno-omit-frame-pointer
      -fno-sanitize-recover=all)
  set(CMAKE_REQUIRED_FLAGS "${WFLO_SANITIZE_FLAGS}")
  list(JOIN CMAKE_REQUIRED_FLAGS " " CMAKE_REQUIRED_FLAGS)
  set(CMAKE_REQUIRED_LINK_OPTIONS ${WFLO_SANITIZE_FLAGS})
  string(MAKE_C_IDENTIFIER "WFLO_SANITIZE_OK_${WFLO_SANITIZE}" var)
  check_c_source_compiles("int main(void) { return 0; }" ${var})
  unset(CMAKE_REQUIRED_FLAGS)
  unset(CMAKE_REQUIRED_LINK_OPTIONS)
  if(NOT ${var})
    message(FATAL_ERROR
      "WFLO_SANITIZE=${WFLO_SANITIZE}: ${CMAKE_C_COMPILER_ID} cannot build "
      "and link with -fsanitize=${WFLO_SANITIZE} (is the sanitizer runtime "
      "installed? for clang on Debian: libclang-rt-dev)")
  endif()
endif()

function(wflo_target_sanitize tgt)
  if(NOT WFLO_SANITIZE_FLAGS)
    return()
  endif()
  get_target_property(type ${tgt} TYPE)
  target_compile_options(${tgt} PRIVATE ${WFLO_SANITIZE_FLAGS})
  if(type STREQUAL "EXECUTABLE" OR type STREQUAL "SHARED_LIBRARY"
     OR type STREQUAL "MODULE_LIBRARY")
    target_link_options(${tgt} PRIVATE ${WFLO_SANITIZE_FLAGS})
  endif()
  if(type STREQUAL "STATIC_LIBRARY" OR type STREQUAL "SHARED_LIBRARY")
    # Whoever links an instrumented library in this build tree (a parent
    # project using add_subdirectory) needs the sanitizer runtime too. The
    # installed package never carries these flags.
    target_link_options(${tgt} INTERFACE
                        "$<BUILD_INTERFACE:${WFLO_SANITIZE_FLAGS}>")
  endif()
endfunction()

function(wflo_target_defaults tgt)
  wflo_target_warnings(${tgt})
  wflo_target_sanitize(${tgt})
endfunction()
