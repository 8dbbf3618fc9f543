// Per-operation costs measured on this machine, for the planner's CPU cluster description.
//
// calibrate_cpu() times cblas_sgemm (row-major, FP32, one BLAS thread per rank) at the shapes
// of the forward, input-gradient and weight-gradient passes of every distinct GEMM of the
// model with M = tokens of one micro-batch (routed experts: tokens K / E), plus the attention
// products (T x T x head dim), medians of `reps` runs, and returns the cluster with those
// rates as fp32 gemm_shapes and attention rates. Blocking: runs for about a second per shape
// on a small model. Not thread-safe with other BLAS users (it sets the BLAS thread count).
#pragma once

#include "switchyard/trainer/plan/cluster.h"
#include "switchyard/trainer/plan/planner.h"

namespace switchyard::trainer::plan {

ClusterSpec calibrate_cpu(const ClusterSpec& base, const TrainingSpec& spec, int reps = 5);

}  // namespace switchyard::trainer::plan
