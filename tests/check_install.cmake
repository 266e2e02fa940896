# cmake -DBUILD_DIR=... -DWORK_DIR=... -DCONSUMER_DIR=... -DGENERATOR=...
#       -DC_COMPILER=... -DLIBDIR=lib -DINCLUDEDIR=include -DVERSION=x.y.z
#       -DPKG_CONFIG=pkg-config [-DMAKE_PROGRAM=...] [-DSANITIZE=...]
#       -P check_install.cmake
#
# Installs the build into WORK_DIR/prefix, checks the installed tree, then
# builds and runs tests/consumer three ways: CMake find_package with
# wflo::wflo and with wflo::wflo_static, and a plain compiler call with
# `pkg-config --cflags --libs wflo` (plus a static link that relies on the
# .pc's Libs.private). Each consumer checks wflo_version() against the header.

cmake_minimum_required(VERSION 3.21)

foreach(_v BUILD_DIR WORK_DIR CONSUMER_DIR GENERATOR C_COMPILER LIBDIR INCLUDEDIR
           VERSION PKG_CONFIG)
  if(NOT DEFINED ${_v} OR "${${_v}}" STREQUAL "")
    message(FATAL_ERROR "check_install: -D${_v}=... is required")
  endif()
endforeach()

set(_prefix "${WORK_DIR}/prefix")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message("${out}")
    message(FATAL_ERROR "check_install: ${what} failed (${rc}): ${ARGN}")
  endif()
  message(STATUS "ok: ${what}")
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

# The consumers need the same sanitizer runtime as the library they link.
set(_san_flags "")
if(SANITIZE)
  set(_san_flags "-fsanitize=${SANITIZE}" -fno-omit-frame-pointer)
endif()
list(JOIN _san_flags " " _san_flags_str)

# --- install -------------------------------------------------------------------

run("install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${_prefix}")

set(_expect
    "${INCLUDEDIR}/wflo.h" "${INCLUDEDIR}/wflo/common.h" "${INCLUDEDIR}/wflo/version.h"
    "${LIBDIR}/libwflo.a" "${LIBDIR}/libwflo.so"
    "${LIBDIR}/pkgconfig/wflo.pc"
    "${LIBDIR}/cmake/wflo/wfloConfig.cmake"
    "${LIBDIR}/cmake/wflo/wfloConfigVersion.cmake"
    "${LIBDIR}/cmake/wflo/wfloTargets.cmake")
string(REGEX MATCH "^[0-9]+" _major "${VERSION}")
list(APPEND _expect "${LIBDIR}/libwflo.so.${_major}" "${LIBDIR}/libwflo.so.${VERSION}")
foreach(_f IN LISTS _expect)
  if(NOT EXISTS "${_prefix}/${_f}")
    message(FATAL_ERROR "check_install: ${_f} was not installed")
  endif()
endforeach()
# Internal headers are never installed.
file(GLOB_RECURSE _private "${_prefix}/*internal*" "${_prefix}/*harness*")
if(_private)
  message(FATAL_ERROR "check_install: private files installed: ${_private}")
endif()
# Every public header source was installed.
get_filename_component(_src_root "${CONSUMER_DIR}/../.." ABSOLUTE)
file(GLOB _src_headers RELATIVE "${_src_root}/include/wflo" "${_src_root}/include/wflo/*.h")
foreach(_h IN LISTS _src_headers)
  if(NOT EXISTS "${_prefix}/${INCLUDEDIR}/wflo/${_h}")
    message(FATAL_ERROR "check_install: include/wflo/${_h} was not installed")
  endif()
endforeach()

# --- CMake consumer ---------------------------------------------------------------

set(_gen_args -G "${GENERATOR}")
if(MAKE_PROGRAM)
  list(APPEND _gen_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
run("configure the find_package consumer"
    "${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${WORK_DIR}/cmake-consumer"
    ${_gen_args}
    "-DCMAKE_C_COMPILER=${C_COMPILER}"
    "-DCMAKE_PREFIX_PATH=${_prefix}"
    "-DCMAKE_BUILD_TYPE=Debug"
    "-DCMAKE_C_FLAGS=${_san_flags_str}"
    "-DCMAKE_EXE_LINKER_FLAGS=${_san_flags_str}"
    "-DEXPECT_VERSION=${VERSION}")
run("build the find_package consumer"
    "${CMAKE_COMMAND}" --build "${WORK_DIR}/cmake-consumer")
run("run the consumer of wflo::wflo" "${WORK_DIR}/cmake-consumer/consumer_shared")
message(STATUS "  ${run_output}")
run("run the consumer of wflo::wflo_static" "${WORK_DIR}/cmake-consumer/consumer_static")
# The shared consumer must use the installed library, not the build tree's.
execute_process(COMMAND ldd "${WORK_DIR}/cmake-consumer/consumer_shared"
                OUTPUT_VARIABLE _ldd RESULT_VARIABLE _rc)
if(_rc EQUAL 0 AND NOT _ldd MATCHES "${_prefix}/${LIBDIR}/libwflo\\.so")
  message(FATAL_ERROR "check_install: consumer_shared does not load the installed libwflo:\n${_ldd}")
endif()

# --- pkg-config consumer ------------------------------------------------------------

set(ENV{PKG_CONFIG_PATH} "${_prefix}/${LIBDIR}/pkgconfig")
run("pkg-config --modversion" "${PKG_CONFIG}" --modversion wflo)
string(STRIP "${run_output}" _pc_version)
if(NOT _pc_version STREQUAL VERSION)
  message(FATAL_ERROR "check_install: wflo.pc says ${_pc_version}, expected ${VERSION}")
endif()
run("pkg-config --variable=prefix" "${PKG_CONFIG}" --variable=prefix wflo)
string(STRIP "${run_output}" _pc_prefix)
if(NOT _pc_prefix STREQUAL _prefix)
  message(FATAL_ERROR "check_install: wflo.pc prefix is ${_pc_prefix}, expected ${_prefix}")
endif()

run("pkg-config --cflags --libs" "${PKG_CONFIG}" --cflags --libs wflo)
separate_arguments(_pc_flags UNIX_COMMAND "${run_output}")
run("compile the pkg-config consumer"
    "${C_COMPILER}" ${_san_flags} "${CONSUMER_DIR}/main.c" ${_pc_flags}
    -o "${WORK_DIR}/pc-consumer")
set(ENV{LD_LIBRARY_PATH} "${_prefix}/${LIBDIR}")
run("run the pkg-config consumer" "${WORK_DIR}/pc-consumer")
unset(ENV{LD_LIBRARY_PATH})

# Static: libwflo.a in place of -lwflo, everything else from the .pc file
# (Requires and Libs.private).
run("pkg-config --static --cflags --libs" "${PKG_CONFIG}" --static --cflags --libs wflo)
separate_arguments(_pc_flags UNIX_COMMAND "${run_output}")
list(TRANSFORM _pc_flags REPLACE "^-lwflo$" "${_prefix}/${LIBDIR}/libwflo.a")
run("link the static pkg-config consumer"
    "${C_COMPILER}" ${_san_flags} "${CONSUMER_DIR}/main.c" ${_pc_flags}
    -o "${WORK_DIR}/pc-consumer-static")
run("run the static pkg-config consumer" "${WORK_DIR}/pc-consumer-static")

message("check_install: installed into ${_prefix}; find_package (shared, static) "
        "and pkg-config (shared, static) consumers built and ran")
