# The demo, examples/agent_demo.c, is the program `wflo-demo`. Its --url mode
# calls a real endpoint through the HTTP client (examples/support), so it
# links the client library made by wfloHttpExample.cmake (libcurl).
if(TARGET agent_demo)
  if(TARGET wflo_llm_client)
    target_link_libraries(agent_demo PRIVATE wflo_llm_client)
    set_target_properties(agent_demo PROPERTIES OUTPUT_NAME wflo-demo)
    if(PROJECT_IS_TOP_LEVEL AND BUILD_TESTING)
      # The demo checks itself (exit status 0 only when every invariant
      # holds); it is timing-based, so it stays out of the valgrind stage.
      add_test(NAME example_agent_demo
               COMMAND $<TARGET_FILE:agent_demo> --quiet --seed 7)
      set_tests_properties(example_agent_demo PROPERTIES
                           LABELS "example;slow" TIMEOUT 120)
      # --url: the same over real HTTP, against the fake LLM server.
      add_executable(demo_url_check
                     "${PROJECT_SOURCE_DIR}/tests/demo_url_check.c")
      target_link_libraries(demo_url_check PRIVATE wflo_test_support)
      wflo_target_defaults(demo_url_check)
      add_test(NAME example_agent_demo_url
               COMMAND demo_url_check $<TARGET_FILE:agent_demo>)
      set_tests_properties(example_agent_demo_url PROPERTIES
                           LABELS "example;slow" TIMEOUT 120)
    endif()
  else()
    message(WARNING "libcurl not found: the demo (agent_demo) is not built")
    set_target_properties(agent_demo PROPERTIES EXCLUDE_FROM_ALL ON)
  endif()
endif()
