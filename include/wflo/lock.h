/* libwflo lock module. Include <wflo.h>, not this file. */
#ifndef WFLO_LOCK_H
#define WFLO_LOCK_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif /* WFLO_LOCK_H */
