// Text and JSON forms of a Schedule. Both round-trip exactly (parse(print(s)) == s).
//
// Text form (one token stream, '#' starts a comment):
//   schedule dualpipe stages 4 microbatches 8 replicas 1 ranks 4
//   path 0 0 1 2 3             # path id, then the rank of each stage
//   path 1 3 2 1 0
//   mbpath 0 0 0 0 1 1 1 1     # path of each micro-batch
//   epgroup 0 4                # optional, repeated
//   rank 0
//     F s0 m0
//     SEND_ACT s0 m0 r1
//     FB s0 m4 / s3 m0
//     F s0 m1 { ATTN.F l0 s0 m1 ; DISPATCH.F l0 s0 m1 }   # optional sub-steps
//     REDUCE s0
// JSON form (nlohmann::json): {"name", "num_stages", "num_microbatches", "num_replicas",
// "paths", "microbatch_path", "ep_groups", "ranks": [[action...]...]} where an action is
// {"op": "F", "stage": 0, "mb": 0} plus "peer", "bwd_stage", "bwd_mb", "sub_steps" when used.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>

#include "switchyard/pipeline/schedule.h"

namespace switchyard::pipeline {

std::string to_text(const Schedule& s);
// Throws InvalidArgument naming the line and token that could not be parsed.
Schedule parse_text(const std::string& text);

nlohmann::json to_json(const Schedule& s);
Schedule from_json(const nlohmann::json& j);

}  // namespace switchyard::pipeline
