# cmake -DNM=nm -DLIBRARY=libwflo.so -DINCLUDE_DIR=include -P check_exports.cmake
#
# Fails unless the dynamic symbols libwflo.so defines are exactly the names
# declared with WFLO_EXTERN in include/wflo.h and include/wflo/*.h, every one
# of them starting with wflo_ (and none with wflo__). The list comes from the
# headers each time, so it stays right as modules add functions.

cmake_minimum_required(VERSION 3.21)

foreach(_v NM LIBRARY INCLUDE_DIR)
  if(NOT DEFINED ${_v} OR "${${_v}}" STREQUAL "")
    message(FATAL_ERROR "check_exports: -D${_v}=... is required")
  endif()
endforeach()

# --- what the headers declare --------------------------------------------------

# Removes /* ... */ comments without a regex (CMake's regex engine recurses
# on long matches, and doc comments are long).
function(strip_block_comments in_var out_var)
  set(text "${${in_var}}")
  set(out "")
  while(TRUE)
    string(FIND "${text}" "/*" start)
    if(start EQUAL -1)
      string(APPEND out "${text}")
      break()
    endif()
    string(SUBSTRING "${text}" 0 ${start} head)
    string(APPEND out "${head} ")
    math(EXPR start "${start} + 2")
    string(SUBSTRING "${text}" ${start} -1 text)
    string(FIND "${text}" "*/" end)
    if(end EQUAL -1)
      break() # unterminated comment: the compiler would have complained
    endif()
    math(EXPR end "${end} + 2")
    string(SUBSTRING "${text}" ${end} -1 text)
  endwhile()
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

set(_id "[A-Za-z_][A-Za-z0-9_]*")
set(_ws "[ \t\r\n]")
file(GLOB _headers "${INCLUDE_DIR}/wflo.h" "${INCLUDE_DIR}/wflo/*.h")
if(NOT _headers)
  message(FATAL_ERROR "check_exports: no headers under ${INCLUDE_DIR}")
endif()
set(_declared "")
foreach(_h IN LISTS _headers)
  file(READ "${_h}" _text)
  strip_block_comments(_text _text)
  string(REGEX REPLACE "//[^\n]*" "" _text "${_text}")
  # Preprocessor lines (joined with their continuations) define WFLO_EXTERN
  # itself and never declare anything.
  string(REPLACE "\\\n" " " _text "${_text}")
  string(REGEX REPLACE "(^|\n)[ \t]*#[^\n]*" "\\1" _text "${_text}")
  # String literals (deprecation messages) may hold ';' or parentheses.
  string(REGEX REPLACE "\"([^\"\\\\\n]|\\\\.)*\"" "\"\"" _text "${_text}")
  # A declaration runs from WFLO_EXTERN to its ';' (or '{' for an inline
  # definition, which should not be exported anyway).
  string(REGEX MATCHALL "WFLO_EXTERN${_ws}[^;{]*" _decls "${_text}")
  foreach(_d IN LISTS _decls)
    string(REGEX REPLACE "${_ws}+" " " _d "${_d}")
    # Attribute macros with arguments, e.g. WFLO_DEPRECATED("..."), and raw
    # __attribute__((...)).
    string(REGEX REPLACE "__attribute__ ?\\(\\(([^()]|\\([^()]*\\))*\\)\\)" " " _d "${_d}")
    string(REGEX REPLACE "WFLO_[A-Z0-9_]* ?\\([^()]*\\)" " " _d "${_d}")
    set(_name "")
    if(_d MATCHES "\\( ?\\* ?(${_id}) ?\\(")   # returns a function pointer
      set(_name "${CMAKE_MATCH_1}")
    elseif(_d MATCHES "(${_id}) ?\\(")          # a function
      set(_name "${CMAKE_MATCH_1}")
    else()                                      # a variable
      string(REGEX REPLACE "[=[].*$" "" _d2 "${_d}")
      if(_d2 MATCHES "(${_id}) ?$")
        set(_name "${CMAKE_MATCH_1}")
      endif()
    endif()
    if(_name STREQUAL "")
      message(SEND_ERROR "check_exports: cannot parse a declaration in ${_h}: ${_d}")
    else()
      list(APPEND _declared "${_name}")
    endif()
  endforeach()
endforeach()
list(REMOVE_DUPLICATES _declared)
list(SORT _declared)

# --- what the library exports ------------------------------------------------------

execute_process(COMMAND "${NM}" -D --defined-only "${LIBRARY}"
                OUTPUT_VARIABLE _nm_out ERROR_VARIABLE _nm_err RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "check_exports: ${NM} -D --defined-only ${LIBRARY} failed: ${_nm_err}")
endif()
string(REPLACE "\n" ";" _nm_lines "${_nm_out}")
set(_exported "")
foreach(_line IN LISTS _nm_lines)
  if(NOT _line MATCHES "^[0-9a-fA-F]* *[A-Za-z] +([^ ]+)$")
    continue()
  endif()
  string(REGEX REPLACE "@.*$" "" _sym "${CMAKE_MATCH_1}")
  # Linker and sanitizer-runtime symbols are not ours.
  if(_sym MATCHES "^(_init|_fini|_edata|_end|__bss_start|__end__|_DYNAMIC|_GLOBAL_OFFSET_TABLE_)$"
     OR _sym MATCHES "^_*(asan|ubsan|tsan|lsan|msan|odr_asan|sanitizer|sancov)")
    continue()
  endif()
  list(APPEND _exported "${_sym}")
endforeach()
list(REMOVE_DUPLICATES _exported)
list(SORT _exported)

# --- compare --------------------------------------------------------------------------

set(_failed FALSE)
foreach(_s IN LISTS _declared)
  if(NOT _s MATCHES "^wflo_" OR _s MATCHES "^wflo__")
    message("public name without the wflo_ prefix (or with the internal wflo__): ${_s}")
    set(_failed TRUE)
  endif()
endforeach()
set(_missing ${_declared})
if(_exported)
  list(REMOVE_ITEM _missing ${_exported})
endif()
set(_extra ${_exported})
if(_declared)
  list(REMOVE_ITEM _extra ${_declared})
endif()
foreach(_s IN LISTS _missing)
  message("declared WFLO_EXTERN but not exported (not defined in src/?): ${_s}")
  set(_failed TRUE)
endforeach()
foreach(_s IN LISTS _extra)
  message("exported but not declared WFLO_EXTERN in a public header: ${_s}")
  set(_failed TRUE)
endforeach()
list(LENGTH _declared _n_declared)
list(LENGTH _exported _n_exported)
if(_failed)
  message(FATAL_ERROR "check_exports: FAILED (${_n_declared} declared, ${_n_exported} exported)")
endif()
message("check_exports: ${_n_exported} exported symbols match the ${_n_declared} WFLO_EXTERN declarations")
