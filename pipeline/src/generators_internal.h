// Private declarations shared by the generator sources.
#pragma once

#include "switchyard/pipeline/generators.h"

namespace switchyard::pipeline::detail {

// The V placement of ZBV-style schedules: 2N stages on one path, stage s on rank s for
// s < N and on rank 2N-1-s after (chunks 0 and 1 of each rank), ranks empty.
Schedule v_placement(const char* name, int num_ranks, int num_microbatches);

// Compute-only generators (add_p2p adds the transfers).
Schedule gen_1f1b(int num_ranks, int num_microbatches);
Schedule gen_interleaved_1f1b(int num_ranks, int num_microbatches, int num_chunks);
Schedule gen_zb_h1(int num_ranks, int num_microbatches);
Schedule gen_zbv(int num_ranks, int num_microbatches);
Schedule gen_zbv_heuristic(int num_ranks, int num_microbatches, const ZbvCosts& costs);
// Complete generators (compute and P2P, reference batching).
Schedule gen_dualpipe(int num_ranks, int num_microbatches, bool reduce_mirrored);
Schedule gen_dualpipev(int num_ranks, int num_microbatches);

}  // namespace switchyard::pipeline::detail
