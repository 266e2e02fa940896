# The HTTP client (examples/support/llm_client.c), the guarded call on top of
# it (examples/support/llm_guarded.c: retry + breaker + lock + budget), the
# example and the tests that use them.
# Included by the top-level CMakeLists.txt after the example and test targets
# exist: examples/llm_http.c and tests/test_http*.c include <curl/curl.h>, so
# the generic loops already made them and linked libcurl; this adds the
# client library they share, and the fake server the example runs against.

if(TARGET PkgConfig::WFLO_CURL AND
   (TARGET llm_http OR TARGET test_http OR TARGET test_http_integration
    OR TARGET agent_demo))
  set(_http_dir "${PROJECT_SOURCE_DIR}/examples/support")

  add_library(wflo_llm_client STATIC "${_http_dir}/llm_client.c"
                                     "${_http_dir}/llm_guarded.c")
  target_include_directories(wflo_llm_client PUBLIC "${_http_dir}")
  target_link_libraries(wflo_llm_client
                        PUBLIC wflo_static PkgConfig::WFLO_CURL)
  wflo_target_defaults(wflo_llm_client)

  if(TARGET llm_http)
    target_sources(llm_http PRIVATE
                   "${PROJECT_SOURCE_DIR}/tests/support/fake_llm.c")
    target_include_directories(llm_http PRIVATE
                               "${PROJECT_SOURCE_DIR}/tests/support")
    target_link_libraries(llm_http PRIVATE wflo_llm_client)
    if(PROJECT_IS_TOP_LEVEL AND BUILD_TESTING)
      add_test(NAME example_llm_http
               COMMAND ${WFLO_TEST_WRAPPER} $<TARGET_FILE:llm_http>)
      set_tests_properties(example_llm_http PROPERTIES
                           LABELS "example;threads" TIMEOUT 60)
    endif()
  endif()

  foreach(_t test_http test_http_integration)
    if(TARGET ${_t})
      target_link_libraries(${_t} PRIVATE wflo_llm_client)
    endif()
  endforeach()
endif()
