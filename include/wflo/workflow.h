/* libwflo workflow module. Include <wflo.h>, not this file. */
#ifndef WFLO_WORKFLOW_H
#define WFLO_WORKFLOW_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif /* WFLO_WORKFLOW_H */
