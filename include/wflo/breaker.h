/* libwflo breaker module. Include <wflo.h>, not this file. */
#ifndef WFLO_BREAKER_H
#define WFLO_BREAKER_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif /* WFLO_BREAKER_H */
