/* libwflo: resilience patterns for AI-agent runtimes in C and C++.
 *
 * This is the one header users include. It includes <uv.h> and <jansson.h>
 * (users get the UV_E* codes and jansson with it) and every module header
 * under wflo/. Anything not declared in these headers is not API.
 *
 * <uv.h> needs POSIX: compile with -std=gnu11, or with
 * -std=c11 -D_POSIX_C_SOURCE=200809L. The headers also compile as C++.
 */
#ifndef WFLO_H
#define WFLO_H

#include "wflo/version.h"
#include "wflo/common.h"
#include "wflo/breaker.h"
#include "wflo/retry.h"
#include "wflo/lock.h"
#include "wflo/context.h"
#include "wflo/workflow.h"
#include "wflo/metrics.h"
#include "wflo/health.h"

#endif /* WFLO_H */
