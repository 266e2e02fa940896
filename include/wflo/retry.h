/* libwflo retry module. Include <wflo.h>, not this file. */
#ifndef WFLO_RETRY_H
#define WFLO_RETRY_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif /* WFLO_RETRY_H */
