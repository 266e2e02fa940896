# cmake -DINCLUDE_DIR=include -P check_doc_codes.cmake
#
# STYLE.md item 22: every WFLO_E_* code a public header mentions (in a doc
# comment or in code) must exist in the error table, WFLO_ERRNO_MAP in
# include/wflo/common.h. Catches docs that promise a code nobody returns.

cmake_minimum_required(VERSION 3.21)

if(NOT INCLUDE_DIR)
  message(FATAL_ERROR "check_doc_codes: -DINCLUDE_DIR=... is required")
endif()

file(READ "${INCLUDE_DIR}/wflo/common.h" _common)
string(REGEX MATCHALL "XX\\(E_[A-Z0-9_]+," _rows "${_common}")
set(_known "")
foreach(_r IN LISTS _rows)
  string(REGEX REPLACE "^XX\\((E_[A-Z0-9_]+),$" "WFLO_\\1" _r "${_r}")
  list(APPEND _known "${_r}")
endforeach()
list(LENGTH _known _n_known)
if(_n_known EQUAL 0)
  message(FATAL_ERROR "check_doc_codes: no XX(E_...) rows found in common.h")
endif()

set(_failed FALSE)
set(_n_mentions 0)
file(GLOB _headers "${INCLUDE_DIR}/wflo.h" "${INCLUDE_DIR}/wflo/*.h")
foreach(_h IN LISTS _headers)
  file(STRINGS "${_h}" _lines REGEX "WFLO_E_")
  foreach(_line IN LISTS _lines)
    string(REGEX MATCHALL "WFLO_E_[A-Z0-9_]*[A-Z0-9]" _codes "${_line}")
    foreach(_c IN LISTS _codes)
      math(EXPR _n_mentions "${_n_mentions} + 1")
      if(NOT _c IN_LIST _known)
        get_filename_component(_name "${_h}" NAME)
        message("${_name}: mentions ${_c}, which is not in WFLO_ERRNO_MAP: ${_line}")
        set(_failed TRUE)
      endif()
    endforeach()
  endforeach()
endforeach()
if(_failed)
  message(FATAL_ERROR "check_doc_codes: FAILED")
endif()
message("check_doc_codes: ${_n_mentions} mentions of WFLO_E_* codes, all among the ${_n_known} defined")
