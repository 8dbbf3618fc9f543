// The Open MPI baseline of sy-a2a-perf: MPI_Alltoall, MPI_Alltoallv, MPI_Allreduce and
// MPI_Send/MPI_Recv on the same buffers, in the same job as Switchyard's comm library.
//
// How both run in one job: start the tool with mpirun. The tool calls MPI_Init first, then
// (when the launcher gave no SY_RENDEZVOUS) rank 0 picks its host name and a free port and
// a random token, broadcasts them with MPI, and every rank exports SY_RENDEZVOUS/SY_TOKEN,
// so Communicator::init() bootstraps from the Open MPI environment (OMPI_COMM_WORLD_*).
// Built only when CMake found MPI (SY_HAVE_MPI); otherwise make_mpi_baseline throws
// Unsupported.
#pragma once

#include <memory>

#include "perf_backend.h"

namespace switchyard::tools {

// True when this process was started by Open MPI's mpirun (OMPI_COMM_WORLD_SIZE is set).
bool launched_by_mpirun();
// True when the tool was built with MPI.
bool mpi_built_in();

// MPI_Init (with argc/argv), the rendezvous export described above, and SY_NODE set to
// "vnode<k>" for `virtual_nodes` > 1 contiguous blocks of ranks when SY_NODE is unset.
// The returned backend calls MPI_Finalize when destroyed.
std::unique_ptr<PerfBackend> make_mpi_baseline(int* argc, char*** argv, int virtual_nodes);

}  // namespace switchyard::tools
