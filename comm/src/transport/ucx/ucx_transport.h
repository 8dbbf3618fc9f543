// UCX (ucp) transport: carries the traffic between ranks on different (virtual) nodes.
//
// One ucp context and one worker per Transport; one endpoint per peer, created from the
// worker addresses the ranks publish in the bootstrap Store. Data moves as UCX tagged
// messages (ucp_tag_send_nbx / ucp_tag_recv_nbx): eager below ~8 KiB, rendezvous above,
// received straight into the caller's buffer. Over tcp this is the fast path of UCX 1.13
// (its RMA put over tcp is 10-100x slower; docs/comm-ucx.md has the design and the plan
// for RMA puts into registered buffers on InfiniBand).
//
// Transports: when the user leaves UCX_TLS unset, the context is opened with
// UCX_TLS=^shm (every transport except shared memory), so ranks on one machine that play
// different nodes talk over tcp as real hosts would, and on an InfiniBand cluster UCX still
// picks rc/dc/ud. A UCX_TLS set by the user is used unchanged.
//
// Large messages by RMA put (SWITCHYARD_COMM_UCX_RMA: -1 auto, 0 off, 1 forced): for a peer
// whose endpoint has a native RMA lane (InfiniBand rc/dc; not tcp, where UCX 1.13 emulates
// puts 10-100x slower) a message of at least SWITCHYARD_COMM_UCX_RMA_MIN_BYTES goes as a
// request-to-send on the user's (peer, tag); the receiver registers its posted buffer
// (ucp_mem_map; once per region for memory announced by add_registered_memory, whose rkey
// then goes to each peer once), answers with the address and packed rkey; the sender puts
// the message there with ucp_put_nbx, flushes the endpoint and sends a fin with the size. The receiver
// never polls remote memory and nothing is staged. Receives from such a peer match either
// form in post order. progress() advances these exchanges, so a request the caller is not
// polling yet still answers its peer. The choice is made per peer at connection time and
// logged (debug); both sides must make the same choice (same knob; lane selection is
// symmetric).
//
// Tags: the UCX tag is (sender rank << 44) | tag (bits 62-63 mark the RMA path's messages),
// so a Transport tag must be below kMaxUcxTag (2^44 - 16; the top 16 values are reserved
// for connection set-up, heartbeats and shutdown) and ranks below 2^18. Messages with the
// same (peer, tag) match in post order.
//
// Threading: the comm core drives a Transport from its progress thread or from a caller
// holding the communicator's lock, but calls wait_for_event() (ucp_worker_arm) without
// it, so the worker is opened in UCS_THREAD_MODE_MULTI; interrupt_wait() may come from any
// thread. Requests
// hold a reference to the worker, so a request that outlives its Transport stays safe to
// test and destroy. wait_for_event() sleeps on the worker's event fd (UCP_FEATURE_WAKEUP)
// until a message arrives or interrupt_wait() signals it.
//
// Faults: a peer whose connection breaks (its process died) is marked dead (UCX calls the
// endpoint's error callback); its pending sends and receives fail with PeerFailure
// naming it, and check_peers() throws PeerFailure for it. A peer that shut its Transport
// down cleanly sends a goodbye first; it then fails only the operations still pending on it.
// Heartbeats catch a peer that hangs. Endpoints use UCP_ERR_HANDLING_MODE_PEER except where
// the context has only tcp (SWITCHYARD_COMM_UCX_FAILURE_MODE=-1, auto): UCX 1.13 gives a
// peer-failure endpoint RMA lanes only on memory domains that can invalidate registrations,
// so over tcp its rendezvous would move through 64 KiB active messages copied out of UCX's
// receive buffers instead of tcp's put, which lands straight in the posted buffer. Without
// that mode the error callback still reports a broken connection, and this transport never
// relies on UCX to complete requests of a failed peer (done() checks the peer first).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/comm/store.h"
#include "switchyard/comm/transport/transport.h"

namespace switchyard::comm {

// Largest tag (exclusive) a caller may pass to the UCX transport's isend/irecv.
inline constexpr uint64_t kMaxUcxTag = (uint64_t{1} << 44) - 16;

// Counters of the RMA path of one UCX transport (tests, debug logs).
struct UcxRmaCounters {
  uint64_t puts_sent = 0;  // messages this rank put into peers' buffers
  uint64_t bytes_put = 0;
  uint64_t puts_received = 0;  // messages peers put into this rank's buffers
  uint64_t receive_registrations = 0;  // receive buffers registered for one message (not in a region)
  uint64_t rkeys_sent = 0;  // packed rkeys sent in ready-to-receives (per message, or once per region and peer)
  uint64_t rkeys_unpacked = 0;  // peers' region rkeys unpacked (once per region and peer)
};
// The counters of `transport`, which must come from make_ucx_transport (else InvalidArgument).
// Call from the thread that drives the transport.
UcxRmaCounters ucx_rma_counters(const Transport& transport);

// True when a ucp_ep_print_info() text shows RMA lanes (role rma_bw) and none of them is tcp
// (UCX 1.13 opens no RMA lane over tcp: its puts there are emulated). Appends the lanes'
// transport names to *lanes when given. Used for SWITCHYARD_COMM_UCX_RMA=-1 (auto).
bool ucx_ep_info_has_native_rma(const std::string& ep_info, std::string* lanes);

// True when a ucp_context_print_info() text lists tcp resources and no others but self (no
// InfiniBand, no shared memory). Appends the resources' names ("tcp/lo") to *resources when
// given. Used for SWITCHYARD_COMM_UCX_FAILURE_MODE=-1 (auto).
bool ucx_context_info_is_tcp_only(const std::string& context_info, std::string* resources);

// ucp_ep_print_info() of `transport`'s endpoint to `peer` (lanes and protocol thresholds;
// tests, debugging). `transport` must come from make_ucx_transport (else InvalidArgument).
// Call from the thread that drives the transport.
std::string ucx_endpoint_info(const Transport& transport, int peer);

// Opens the UCX transport of `rank` (of `world_size`) to `peers` (ranks, none equal to
// `rank`). Collective over `rank` and all of `peers`: each publishes its worker address
// under key_prefix + std::to_string(rank) in `store`, reads its peers' addresses, creates
// the endpoints and exchanges one zero-byte hello with every peer so every connection
// exists before this returns (a peer dying later is then detected). Blocks up to
// SWITCHYARD_COMM_UCX_CONNECT_TIMEOUT_MS; throws Timeout naming the peers that did not
// answer, IoError when UCX cannot start, InvalidArgument for bad ranks.
std::unique_ptr<Transport> make_ucx_transport(int rank, int world_size, Store& store, const std::string& key_prefix,
                                              const std::vector<int>& peers);

}  // namespace switchyard::comm
