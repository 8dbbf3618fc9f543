// all_reduce and reduce_scatter with a fixed reduction order.
//
// Reduce-scatter: rank i receives chunk i from every member and reduces the inputs in
// group order (its own included at its position), so each chunk is computed once, by one
// rank, always the same way. All-gather then hands every rank the same bits.
// Hierarchical (more than one node): reduce-scatter inside the node, reduce-scatter and
// all-gather of that chunk between rail peers (one per node), all-gather inside the node:
// network traffic per rank drops by the local size. bf16 is staged in fp32 so partial sums
// are never rounded.
// Small (one node, up to SWITCHYARD_COMM_SMALL_ALL_REDUCE_BYTES): one exchange of whole
// buffers, then every rank reduces all inputs in group order: the same function over the
// same inputs in the same order as the reduce-scatter, so the same bits.
#include <cstring>

#include "collectives/collectives.h"
#include "core/reduce.h"
#include "switchyard/common/error.h"

namespace switchyard::comm::detail {

void add_reduce_scatter(Op& op, const Group& g, TagSpace ts, uint8_t sub, const uint8_t* in, uint8_t* out_mine,
                        size_t begin, size_t end, DataType type, ReduceOp rop) {
  int n = g.size(), me = g.me;
  size_t es = dtype_size(type);
  size_t mb, mend;
  chunk_range(begin, end, n, me, mb, mend);
  size_t mine = mend - mb;
  Step step;
  std::vector<const void*> inputs(static_cast<size_t>(n));
  for (int k = 1; k < n; ++k) {
    int j = (me + n - k) % n;
    uint8_t* tmp = op.alloc(mine * es);
    inputs[static_cast<size_t>(j)] = tmp;
    step.transfers.push_back({false, g.ranks[j], ts.tag(sub), tmp, mine * es, true});
  }
  for (int k = 1; k < n; ++k) {
    int j = (me + k) % n;
    size_t cb, ce;
    chunk_range(begin, end, n, j, cb, ce);
    step.transfers.push_back({true, g.ranks[j], ts.tag(sub), const_cast<uint8_t*>(in + cb * es), (ce - cb) * es, true});
  }
  inputs[static_cast<size_t>(me)] = in + mb * es;
  step.then = [inputs, out_mine, mine, type, rop, es](Op&) {
    if (inputs.size() == 1) {
      if (mine > 0 && out_mine != inputs[0]) std::memmove(out_mine, inputs[0], mine * es);
      return;
    }
    reduce_inputs(out_mine, inputs, mine, type, rop);
  };
  op.steps.push_back(std::move(step));
}

void add_all_gather_chunks(Op& op, const Group& g, TagSpace ts, uint8_t sub, uint8_t* buf, size_t begin, size_t end,
                           size_t esize) {
  int n = g.size(), me = g.me;
  if (n == 1) return;
  size_t mb, me_end;
  chunk_range(begin, end, n, me, mb, me_end);
  Step step;
  for (int k = 1; k < n; ++k) {
    int j = (me + n - k) % n;
    size_t cb, ce;
    chunk_range(begin, end, n, j, cb, ce);
    step.transfers.push_back({false, g.ranks[j], ts.tag(sub), buf + cb * esize, (ce - cb) * esize, true});
  }
  for (int k = 1; k < n; ++k) {
    int j = (me + k) % n;
    step.transfers.push_back({true, g.ranks[j], ts.tag(sub), buf + mb * esize, (me_end - mb) * esize, true});
  }
  op.steps.push_back(std::move(step));
}

void add_all_reduce(Op& op, const Group& g, const Hierarchy* h, TagSpace ts, const uint8_t* send, uint8_t* recv,
                    size_t count, DataType type, ReduceOp rop) {
  size_t es = dtype_size(type);
  if (!h) {
    size_t mb, mend;
    chunk_range(0, count, g.size(), g.me, mb, mend);
    add_reduce_scatter(op, g, ts, 0, send, recv + mb * es, 0, count, type, rop);
    add_all_gather_chunks(op, g, ts, 1, recv, 0, count, es);
    return;
  }
  const uint8_t* in = send;
  uint8_t* out = recv;
  DataType work_type = type;
  if (type == DataType::kBfloat16) {
    // Stage in fp32: partial sums of a node stay unrounded.
    float* staged = reinterpret_cast<float*>(op.alloc(count * sizeof(float)));
    const uint16_t* src = reinterpret_cast<const uint16_t*>(send);
    for (size_t i = 0; i < count; ++i) staged[i] = bf16_to_float(src[i]);
    in = out = reinterpret_cast<uint8_t*>(staged);
    work_type = DataType::kFloat32;
  }
  size_t wes = dtype_size(work_type);
  size_t lb, le, rb, re;
  chunk_range(0, count, h->local.size(), h->local.me, lb, le);
  chunk_range(lb, le, h->rail.size(), h->rail.me, rb, re);
  add_reduce_scatter(op, h->local, ts, 0, in, out + lb * wes, 0, count, work_type, rop);
  add_reduce_scatter(op, h->rail, ts, 1, out, out + rb * wes, lb, le, work_type, rop);
  add_all_gather_chunks(op, h->rail, ts, 2, out, lb, le, wes);
  add_all_gather_chunks(op, h->local, ts, 3, out, 0, count, wes);
  if (type == DataType::kBfloat16) {
    const float* staged = reinterpret_cast<const float*>(out);
    uint16_t* dst = reinterpret_cast<uint16_t*>(recv);
    Step finish;
    finish.then = [staged, dst, count](Op&) {
      for (size_t i = 0; i < count; ++i) dst[i] = float_to_bf16(staged[i]);
    };
    op.steps.push_back(std::move(finish));
  }
}

void all_reduce_small_transfers(const Group& g, TagSpace ts, const uint8_t* send, uint8_t* gathered, size_t bytes,
                                std::vector<Transfer>& out) {
  int n = g.size(), me = g.me;
  for (int k = 1; k < n; ++k) {
    int j = (me + k) % n;
    out.push_back({true, g.ranks[j], ts.tag(0), const_cast<uint8_t*>(send), bytes, true});
  }
  for (int k = 1; k < n; ++k) {
    int j = (me + n - k) % n;
    out.push_back({false, g.ranks[j], ts.tag(0), gathered + static_cast<size_t>(j) * bytes, bytes, true});
  }
}

void all_reduce_small_finish(int n, int me, const uint8_t* send, const uint8_t* gathered, uint8_t* recv, size_t count,
                             DataType type, ReduceOp rop) {
  size_t bytes = count * dtype_size(type);
  std::vector<const void*> inputs(static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) inputs[static_cast<size_t>(j)] = gathered + static_cast<size_t>(j) * bytes;
  inputs[static_cast<size_t>(me)] = send;
  reduce_inputs(recv, inputs, count, type, rop);
}

void add_all_reduce_small(Op& op, const Group& g, TagSpace ts, const uint8_t* send, uint8_t* recv, size_t count,
                          DataType type, ReduceOp rop) {
  size_t bytes = count * dtype_size(type);
  uint8_t* gathered = op.alloc(static_cast<size_t>(g.size()) * bytes);
  Step step;
  all_reduce_small_transfers(g, ts, send, gathered, bytes, step.transfers);
  step.then = [n = g.size(), me = g.me, send, gathered, recv, count, type, rop](Op&) {
    all_reduce_small_finish(n, me, send, gathered, recv, count, type, rop);
  };
  op.steps.push_back(std::move(step));
}

}  // namespace switchyard::comm::detail
