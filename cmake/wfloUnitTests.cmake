# Run by ctest itself (TEST_INCLUDE_FILES of tests/), each time it loads the
# tests: registers one test per unit-test executable, with labels and timeout
# read from the test's source at that moment:
#   ctest-labels: LABEL...     (space- or comma-separated; "unit" is implied)
#   ctest-timeout: SECONDS     (default WFLO_TEST_TIMEOUT)
# The timeout is multiplied by the environment variable
# WFLO_TEST_TIMEOUT_MULTIPLIER (a positive integer, default 1) of the ctest
# run. So a new label in an existing test file needs no re-configure, and the
# multiplier is chosen per run (sanitizer and valgrind runs set it).
#
# Inputs (from the generated wflo_unit_tests.cmake):
#   WFLO_UNIT_TESTS    list of "name|/path/to/test_name.c|/path/to/executable"
#   WFLO_TEST_WRAPPER  command list that runs each executable (may be empty)
#   WFLO_TEST_TIMEOUT  base timeout in seconds

set(_wflo_mult 1)
if(NOT "$ENV{WFLO_TEST_TIMEOUT_MULTIPLIER}" STREQUAL "")
  if("$ENV{WFLO_TEST_TIMEOUT_MULTIPLIER}" MATCHES "^[1-9][0-9]*$")
    set(_wflo_mult "$ENV{WFLO_TEST_TIMEOUT_MULTIPLIER}")
  else()
    message(WARNING "WFLO_TEST_TIMEOUT_MULTIPLIER=\"$ENV{WFLO_TEST_TIMEOUT_MULTIPLIER}\" "
                    "is not a positive integer; using 1")
  endif()
endif()

foreach(_wflo_entry IN LISTS WFLO_UNIT_TESTS)
  string(REPLACE "|" ";" _wflo_entry "${_wflo_entry}")
  list(GET _wflo_entry 0 _wflo_name)
  list(GET _wflo_entry 1 _wflo_src)
  list(GET _wflo_entry 2 _wflo_exe)
  set(_wflo_labels unit)
  set(_wflo_timeout ${WFLO_TEST_TIMEOUT})
  if(EXISTS "${_wflo_src}")
    file(STRINGS "${_wflo_src}" _wflo_lines REGEX "ctest-(labels|timeout):")
    foreach(_wflo_line IN LISTS _wflo_lines)
      if(_wflo_line MATCHES "ctest-labels:[ \t]*([A-Za-z0-9_, \t-]+)")
        string(REGEX REPLACE "[ \t,]+" ";" _wflo_more "${CMAKE_MATCH_1}")
        list(APPEND _wflo_labels ${_wflo_more})
      elseif(_wflo_line MATCHES "ctest-timeout:[ \t]*([0-9]+)")
        set(_wflo_timeout ${CMAKE_MATCH_1})
      endif()
    endforeach()
  endif()
  list(REMOVE_ITEM _wflo_labels "")
  list(REMOVE_DUPLICATES _wflo_labels)
  math(EXPR _wflo_timeout "${_wflo_timeout} * ${_wflo_mult}")
  add_test(${_wflo_name} ${WFLO_TEST_WRAPPER} "${_wflo_exe}")
  set_tests_properties(${_wflo_name} PROPERTIES
                       LABELS "${_wflo_labels}" TIMEOUT ${_wflo_timeout})
endforeach()
