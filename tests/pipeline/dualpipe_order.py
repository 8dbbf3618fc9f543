#!/usr/bin/python3
"""Expected per-rank action order of DeepSeek's DualPipe / DualPipeV reference.

An independent re-statement, for the conformance test, of the step() loops of
deepseek-ai/DualPipe (commit 3da1bbe) dualpipe/dualpipe.py and dualpipe/dualpipev.py:
the same helper structure (_forward_chunk, _backward_chunk, _forward_backward_chunk,
_weight_chunk, the P2P helpers queueing ops until _commit_and_wait_comm, WeightGradStore as
a FIFO), but instead of running modules each helper records what it would do.

Output (stdout), one block per rank, in the C++ library's action text:
    rank R
      F s<stage> m<mb>            forward
      B s m / BW s m / W s m      backward input-only (zero bubble on) / full / weight
      FB s m / s m                overlapped forward (first) and backward (second)
      SEND_ACT s m r<peer> ...    P2P ops in the order they are committed

Usage: dualpipe_order.py {dualpipe|dualpipev} RANKS MICROBATCHES
No torch needed.
"""
import sys
from collections import deque


class Trace:
    """Records the reference's behaviour for one rank."""

    def __init__(self, v_shape, num_ranks, num_chunks, rank):
        self.v = v_shape
        self.num_ranks = num_ranks
        self.num_chunks = num_chunks
        self.rank = rank
        self.is_first_rank = rank == 0
        self.is_last_rank = rank == num_ranks - 1
        self.is_in_second_half = (not v_shape) and rank >= num_ranks // 2
        self.is_middle_rank = (not v_shape) and (rank == num_ranks // 2 - 1 or rank == num_ranks // 2)
        self.f_id = [0, 0]
        self.b_id = [0, 0]
        self.send_f_id = [0, 0]
        self.send_b_id = [0, 0]
        self.recv_f_id = [0, 0]
        self.recv_b_id = [0, 0]
        self.comm_ops = []
        self.wgrad = deque()
        self.out = []

    # --- where things live -------------------------------------------------
    def stage(self, phase):
        """Model stage held as module[phase] (phase already un-swapped)."""
        if phase == 0:
            return self.rank
        return 2 * self.num_ranks - 1 - self.rank if self.v else self.num_ranks - 1 - self.rank

    def mb(self, phase, chunk_id):
        """Global micro-batch id: DualPipe numbers the reverse direction after the forward one."""
        if not self.v and phase == 1:
            return self.num_chunks // 2 + chunk_id
        return chunk_id

    def fix(self, phase):
        return phase ^ 1 if self.is_in_second_half else phase

    def is_first_stage(self, phase):
        if self.v:
            return self.is_first_rank and phase == 0
        return (self.is_first_rank and phase == 0) or (self.is_last_rank and phase == 1)

    def is_last_stage(self, phase):
        if self.v:
            return self.is_first_rank and phase == 1
        return (self.is_first_rank and phase == 1) or (self.is_last_rank and phase == 0)

    # --- P2P (queued until commit) ------------------------------------------
    def _recv_forward(self, phase):
        phase = self.fix(phase)
        if self.v:
            if (self.is_first_rank and phase == 0) or (self.is_last_rank and phase == 1):
                return
        elif self.is_first_stage(phase):
            return
        c = self.recv_f_id[phase]
        self.recv_f_id[phase] += 1
        peer = self.rank - 1 if phase == 0 else self.rank + 1
        self.comm_ops.append("RECV_ACT s%d m%d r%d" % (self.stage(phase) - 1, self.mb(phase, c), peer))

    def _send_forward(self, phase):
        phase = self.fix(phase)
        if self.v:
            if (self.is_first_rank and phase == 1) or (self.is_last_rank and phase == 0):
                return
        elif self.is_last_stage(phase):
            return
        c = self.send_f_id[phase]
        self.send_f_id[phase] += 1
        peer = self.rank + 1 if phase == 0 else self.rank - 1
        self.comm_ops.append("SEND_ACT s%d m%d r%d" % (self.stage(phase), self.mb(phase, c), peer))

    def _recv_backward(self, phase):
        phase = self.fix(phase)
        if self.v:
            if (self.is_first_rank and phase == 1) or (self.is_last_rank and phase == 0):
                return
        elif self.is_last_stage(phase):
            return
        c = self.recv_b_id[phase]
        self.recv_b_id[phase] += 1
        peer = self.rank + 1 if phase == 0 else self.rank - 1
        self.comm_ops.append("RECV_GRAD s%d m%d r%d" % (self.stage(phase) + 1, self.mb(phase, c), peer))

    def _send_backward(self, phase):
        phase = self.fix(phase)
        if self.v:
            if (self.is_first_rank and phase == 0) or (self.is_last_rank and phase == 1):
                return
        elif self.is_first_stage(phase):
            return
        c = self.send_b_id[phase]
        self.send_b_id[phase] += 1
        peer = self.rank - 1 if phase == 0 else self.rank + 1
        self.comm_ops.append("SEND_GRAD s%d m%d r%d" % (self.stage(phase), self.mb(phase, c), peer))

    def _commit_and_wait_comm(self):
        self.out.extend(self.comm_ops)
        self.comm_ops = []

    # --- compute -------------------------------------------------------------
    def _forward_compute_chunk(self, phase):
        phase = self.fix(phase)
        c = self.f_id[phase]
        self.f_id[phase] += 1
        self.out.append("F s%d m%d" % (self.stage(phase), self.mb(phase, c)))

    def _backward_compute_chunk(self, phase, enable_zb=False):
        phase = self.fix(phase)
        c = self.b_id[phase]
        self.b_id[phase] += 1
        s, m = self.stage(phase), self.mb(phase, c)
        if enable_zb:
            self.out.append("B s%d m%d" % (s, m))
            self.wgrad.append("W s%d m%d" % (s, m))  # WeightGradStore.flush()
        else:
            self.out.append("BW s%d m%d" % (s, m))

    def _forward_backward_compute_chunk(self, phase0, phase1):
        p0, p1 = self.fix(phase0), self.fix(phase1)
        c0 = self.f_id[p0]
        self.f_id[p0] += 1
        c1 = self.b_id[p1]
        self.b_id[p1] += 1
        self.out.append("FB s%d m%d / s%d m%d" % (self.stage(p0), self.mb(p0, c0), self.stage(p1), self.mb(p1, c1)))

    def _forward_chunk(self, phase, recv=True, send=True):
        if recv:
            self._recv_forward(phase)
        self._commit_and_wait_comm()
        self._forward_compute_chunk(phase)
        if send:
            self._send_forward(phase)

    def _backward_chunk(self, phase, enable_zb=False, recv=True, send=True):
        if recv:
            self._recv_backward(phase)
        self._commit_and_wait_comm()
        self._backward_compute_chunk(phase, enable_zb)
        if send:
            self._send_backward(phase)

    def _forward_backward_chunk(self, phase0, phase1, recv0=True):
        if recv0:
            self._recv_forward(phase0)
        self._recv_backward(phase1)
        self._commit_and_wait_comm()
        self._forward_backward_compute_chunk(phase0, phase1)
        self._send_forward(phase0)
        self._send_backward(phase1)

    def _weight_chunk(self):
        self._commit_and_wait_comm()
        self.out.append(self.wgrad.popleft())  # WeightGradStore.pop(), FIFO

    # --- step() ----------------------------------------------------------------
    def step(self):
        if self.v:
            num_half_ranks, half_rank, half_num_chunks = self.num_ranks, self.rank, self.num_chunks
            special = self.is_last_rank
        else:
            num_half_ranks = self.num_ranks // 2
            half_rank = min(self.rank, self.num_ranks - 1 - self.rank)
            half_num_chunks = self.num_chunks // 2
            special = self.is_middle_rank

        # Step 1: nF0
        for _ in range((num_half_ranks - half_rank - 1) * 2):
            self._forward_chunk(0)

        # Step 2: nF0F1
        step_2 = half_rank + 1
        self._recv_forward(0)
        for i in range(step_2):
            if self.v:
                self._forward_chunk(0, recv=False, send=False)
                self._recv_forward(0)
                self._forward_chunk(1, send=(not self.is_last_rank) or (i < step_2 - 1))
                self._send_forward(0)
            else:
                self._forward_chunk(0, recv=False, send=self.is_middle_rank)
                self._recv_forward(0)
                self._forward_chunk(1, send=(not self.is_middle_rank) or (i < step_2 - 1))
                if not self.is_middle_rank:
                    self._send_forward(0)

        # Step 3: nB1W1F1
        for _ in range(num_half_ranks - half_rank - 1):
            self._backward_chunk(1, enable_zb=True)
            self._recv_forward(1)
            self._weight_chunk()
            self._forward_chunk(1, recv=False)

        # Step 4: nF0B1F1B0
        if self.v:
            step_4 = self.num_chunks - self.num_ranks * 2 + half_rank + 1
        else:
            step_4 = half_num_chunks - self.num_ranks + half_rank + 1
        for i in range(step_4):
            if i == 0:
                if special:
                    self._forward_chunk(0, recv=False, send=False)
                    self._send_forward(1)
                    self._backward_chunk(1, send=False)
                    self._send_forward(0)
                    self._send_backward(1)
                else:
                    self._forward_backward_chunk(0, 1, recv0=False)
            else:
                self._forward_backward_chunk(0, 1)
            self._forward_backward_chunk(1, 0)

        # Step 5: nB1F1B0
        for _ in range(num_half_ranks - half_rank - 1):
            self._backward_chunk(1)
            self._forward_backward_chunk(1, 0)

        # Step 6: nB1B0
        step_6 = half_rank + 1
        enable_zb = False
        for i in range(step_6):
            if i == step_6 // 2 and half_rank % 2 == 1:
                enable_zb = True
            self._backward_chunk(1, enable_zb=enable_zb)
            if i == step_6 // 2 and half_rank % 2 == 0:
                enable_zb = True
            self._backward_chunk(0, enable_zb=enable_zb)

        # Step 7: nWB0
        for _ in range(num_half_ranks - half_rank - 1):
            self._weight_chunk()
            self._backward_chunk(0, enable_zb=True)

        # Step 8: nW
        for _ in range(half_rank + 1):
            self._weight_chunk()
        assert not self.wgrad, "weight-gradient queue not empty at the end of step()"
        self._commit_and_wait_comm()
        return self.out


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("dualpipe", "dualpipev"):
        sys.exit(__doc__)
    v_shape = sys.argv[1] == "dualpipev"
    num_ranks, num_chunks = int(sys.argv[2]), int(sys.argv[3])
    if v_shape:
        assert num_chunks > 0 and num_chunks >= num_ranks * 2
    else:
        assert num_ranks % 2 == 0
        assert num_chunks > 0 and num_chunks % 2 == 0 and num_chunks >= num_ranks * 2
    for rank in range(num_ranks):
        print("rank %d" % rank)
        for line in Trace(v_shape, num_ranks, num_chunks, rank).step():
            print("  " + line)


if __name__ == "__main__":
    main()
