/* Runs `wflo-demo --url` against the fake LLM server (its own thread), with
 * a few scripted 500s and a 429, and checks that the demo's self-check holds
 * over real HTTP: exit status 0, and every execution's requests reached the
 * server. usage: demo_url_check PATH-TO-wflo-demo */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_llm.h"

static int64_t g_exit = -1;

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  g_exit = sig != 0 ? 128 + sig : status;
  uv_close((uv_handle_t *)p, NULL);
}

int main(int argc, char **argv) {
  fake_llm_t *f;
  uv_loop_t loop;
  uv_process_t proc;
  uv_process_options_t opt;
  uv_stdio_container_t stdio[3];
  char url[64];
  char *args[12];
  uint64_t ok, e500, e429;
  int rc;

  if (argc != 2) {
    fprintf(stderr, "usage: %s PATH-TO-wflo-demo\n", argv[0]);
    return 2;
  }
  if (fake_llm_start_thread(&f) != 0)
    return 1;
  fake_llm_set_latency(f, 5);
  fake_llm_fail_next(f, 3, FAKE_LLM_500, -1);
  fake_llm_fail_next(f, 1, FAKE_LLM_429, 0);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", fake_llm_port(f));

  args[0] = argv[1];
  args[1] = "--url";
  args[2] = url;
  args[3] = "--model";
  args[4] = "gpt-4o-mini";
  args[5] = "--executions";
  args[6] = "6";
  args[7] = "--json";
  args[8] = "--quiet";
  args[9] = NULL;
  memset(&opt, 0, sizeof(opt));
  opt.file = argv[1];
  opt.args = args;
  opt.exit_cb = on_exit_cb;
  opt.stdio_count = 3;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  opt.stdio = stdio;

  uv_loop_init(&loop);
  rc = uv_spawn(&loop, &proc, &opt);
  if (rc != 0) {
    fprintf(stderr, "spawn %s: %s\n", argv[1], uv_strerror(rc));
    fake_llm_close(f, NULL, NULL);
    return 1;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  ok = fake_llm_requests(f, FAKE_LLM_OK);
  e500 = fake_llm_requests(f, FAKE_LLM_500);
  e429 = fake_llm_requests(f, FAKE_LLM_429);
  fake_llm_close(f, NULL, NULL);
  fprintf(stderr,
          "demo exit %lld; server answered %llu ok, %llu 500s, "
          "%llu 429s\n",
          (long long)g_exit, (unsigned long long)ok, (unsigned long long)e500,
          (unsigned long long)e429);
  /* 6 executions of at least 4 steps each answered over HTTP, and the
   * scripted failures were retried through. */
  if (g_exit != 0 || ok < 24 || e500 != 3 || e429 != 1)
    return 1;
  return 0;
}
