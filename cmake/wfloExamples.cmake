# One ctest per example program (label "example"), so the programs users
# copy from cannot rot: each must exit 0 (the examples check their own
# outcome) and run in well under a second. Included by the top-level
# CMakeLists.txt after the example targets (and wfloHttpExample.cmake)
# exist; an example that already has a test named example_<name> keeps it.
# More labels come from a "ctest-labels: LABEL..." comment in the source
# (threads: the clang-tsan CI stage runs it too). Examples run under
# WFLO_TEST_WRAPPER (valgrind in CI) like the unit tests.

if(WFLO_BUILD_EXAMPLES AND PROJECT_IS_TOP_LEVEL AND BUILD_TESTING)
  file(GLOB _wflo_example_srcs CONFIGURE_DEPENDS
       "${PROJECT_SOURCE_DIR}/examples/*.c"
       "${PROJECT_SOURCE_DIR}/examples/*.cpp")
  foreach(_src IN LISTS _wflo_example_srcs)
    get_filename_component(_name "${_src}" NAME_WE)
    if(NOT TARGET ${_name} OR TEST example_${_name})
      continue() # not built here (no curl, no C++) or registered already
    endif()
    set(_labels example)
    file(STRINGS "${_src}" _lines REGEX "ctest-labels:")
    foreach(_line IN LISTS _lines)
      if(_line MATCHES "ctest-labels:[ \t]*([A-Za-z0-9_, \t-]+)")
        string(REGEX REPLACE "[ \t,]+" ";" _more "${CMAKE_MATCH_1}")
        list(APPEND _labels ${_more})
      endif()
    endforeach()
    list(REMOVE_ITEM _labels "")
    list(REMOVE_DUPLICATES _labels)
    add_test(NAME example_${_name}
             COMMAND ${WFLO_TEST_WRAPPER} $<TARGET_FILE:${_name}>)
    set_tests_properties(example_${_name} PROPERTIES
                         LABELS "${_labels}" TIMEOUT 60)
  endforeach()
endif()
