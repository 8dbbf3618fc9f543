#!/usr/bin/python3
"""Self-test of the PyTorch DeepSeek-V3 reference (ds3_reference.py) and safetensors_io.py.

Each check compares against something independent of the code under test: torch.autograd
gradcheck (finite differences, FP64), closed-form values from the spec (YaRN bands, softmax
scale, parameter counts of section 5 and 11), brute-force Python loops (router, balance loss,
attention, MoE), complex-number rotation (RoPE), torch's own bfloat16 rounding.

Exits 77 (ctest SKIP_RETURN_CODE) with a message when torch cannot be imported.
Runtime: a few seconds on one core.
"""

import json
import math
import os
import struct
import sys
import tempfile
import unittest

try:
    import torch
except ImportError as exc:  # Debian python3-torch absent: skip, do not fail
    print(f"SKIP: torch cannot be imported ({exc}); install python3-torch to run the reference")
    sys.exit(77)

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ds3_reference as ref  # noqa: E402
import safetensors_io  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CONFIGS = os.path.join(REPO, "trainer", "configs")

torch.set_num_threads(1)

# A very small config for gradchecks of single blocks (every structural feature kept).
MICRO = dict(vocab_size=32, hidden_size=16, intermediate_size=24, moe_intermediate_size=8,
             num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=2,
             q_lora_rank=8, kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=4,
             v_head_dim=6, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
             n_group=4, topk_group=2, routed_scaling_factor=2.5, max_position_embeddings=16,
             num_nextn_predict_layers=1)

# DeepSeek-V3 671B, the HF config values of the spec's section 1.1 table.
V3 = dict(vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
          num_hidden_layers=61, first_k_dense_replace=3, num_attention_heads=128, q_lora_rank=1536,
          kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
          n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4,
          routed_scaling_factor=2.5, norm_topk_prob=True, scoring_func="sigmoid",
          topk_method="noaux_tc", rope_theta=10000.0, max_position_embeddings=163840,
          num_nextn_predict_layers=1,
          rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})


def micro_cfg(**over):
    return ref.config_from_dict({**MICRO, **over})


def leaf(t):
    return t.detach().clone().requires_grad_(True)


# -----------------------------------------------------------------------------


class SafetensorsTest(unittest.TestCase):
    def test_round_trip_every_writable_dtype(self):
        rng = np.random.default_rng(0)
        tensors = {
            "f64": rng.standard_normal((3, 4)),
            "f32": rng.standard_normal((5,)).astype(np.float32),
            "i64": rng.integers(-2**40, 2**40, size=(2, 3, 2)),
            "i32": rng.integers(-100, 100, size=(7,)).astype(np.int32),
            "u8": rng.integers(0, 255, size=(4, 4)).astype(np.uint8),
            "scalar1": np.array([3.5]),
            "empty": np.zeros((0, 3), dtype=np.float32),
        }
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.safetensors")
            safetensors_io.save(path, tensors, metadata={"k": "v"})
            # the layout by hand: u64 header length, JSON, 8-byte aligned data start
            with open(path, "rb") as f:
                raw = f.read()
            (n,) = struct.unpack("<Q", raw[:8])
            self.assertEqual((8 + n) % 8, 0)
            header = json.loads(raw[8:8 + n])
            self.assertEqual(header["__metadata__"], {"k": "v"})
            self.assertEqual(header["f64"]["dtype"], "F64")
            self.assertEqual(header["i32"]["shape"], [7])
            b, e = header["f32"]["data_offsets"]
            self.assertEqual(raw[8 + n + b:8 + n + e], tensors["f32"].astype("<f4").tobytes())
            back, infos, meta = safetensors_io.load(path)
            self.assertEqual(meta, {"k": "v"})
            for name, arr in tensors.items():
                self.assertEqual(back[name].dtype, arr.dtype, name)
                np.testing.assert_array_equal(back[name], arr)

    def test_bf16_matches_torch_rounding(self):
        x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.75, 3.0e38, 1e-40, 0.1, np.inf],
                     dtype=np.float32)
        x = np.concatenate([x, np.random.default_rng(1).standard_normal(1000).astype(np.float32)])
        want = torch.from_numpy(x).bfloat16().float().numpy()   # torch rounds to nearest even
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "b.safetensors")
            safetensors_io.save(path, {"x": x}, dtypes={"x": "BF16"})
            back, infos, _ = safetensors_io.load(path)
        self.assertEqual(infos["x"].dtype, "BF16")
        np.testing.assert_array_equal(back["x"], want)
        self.assertEqual(back["x"][1], 1.0)            # tie rounds to even
        self.assertEqual(back["x"][2], 1 + 2**-6)      # tie rounds to even (up)

    def test_reads_f8_e4m3(self):
        # bytes -> values from the e4m3fn definition (bias 7, 0x7f NaN, max 448)
        cases = {0x00: 0.0, 0x38: 1.0, 0xB8: -1.0, 0x7E: 448.0, 0x01: 2**-9, 0x08: 2**-6,
                 0x3C: 1.5, 0x40: 2.0, 0x07: 7 * 2**-9, 0xFE: -448.0}
        data = bytes(list(cases) + [0x7F])
        header = json.dumps({"q": {"dtype": "F8_E4M3", "shape": [len(data)],
                                   "data_offsets": [0, len(data)]}}).encode()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "f8.safetensors")
            with open(path, "wb") as f:
                f.write(struct.pack("<Q", len(header)) + header + data)
            back, infos, meta = safetensors_io.load(path)
        self.assertIsNone(meta)
        np.testing.assert_array_equal(back["q"][:-1], np.array(list(cases.values()), np.float32))
        self.assertTrue(np.isnan(back["q"][-1]))

    def test_bad_header_is_rejected(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bad.safetensors")
            header = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
            with open(path, "wb") as f:
                f.write(struct.pack("<Q", len(header)) + header + bytes(16))
            with self.assertRaisesRegex(ValueError, "'a' spans 12 bytes"):
                safetensors_io.load(path)
            with open(path, "wb") as f:
                f.write(struct.pack("<Q", 1000) + b"{}")
            with self.assertRaisesRegex(ValueError, "runs past the file end"):
                safetensors_io.load(path)


# -----------------------------------------------------------------------------
# The model again as plain per-token loops (independent of the batched code under test)


def norm_loop(v, w, eps):
    # v [C] one token
    return w * v / math.sqrt(float((v * v).mean()) + eps)


def mla_loops(x, p, pre, cfg):
    """x [B, T, d] -> [B, T, d]: per token, per head, per key position; RoPE by explicit
    rotation of the pairs (2i, 2i+1)."""
    a = pre + "self_attn."
    B, T, d = x.shape
    H, dn, dr, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    rkv, eps = cfg.kv_lora_rank, cfg.rms_norm_eps

    def rot(v, pos):
        out = v.clone()
        for i in range(dr // 2):
            ang = pos * cfg.rope_theta ** (-2.0 * i / dr)
            out[2 * i] = v[2 * i] * math.cos(ang) - v[2 * i + 1] * math.sin(ang)
            out[2 * i + 1] = v[2 * i] * math.sin(ang) + v[2 * i + 1] * math.cos(ang)
        return out
    y = torch.zeros(B, T, d, dtype=x.dtype)
    scale = (dn + dr) ** -0.5
    for b in range(B):
        qs, ks, vs = [], [], []
        for t in range(T):
            q = p[a + "q_b_proj.weight"] @ norm_loop(p[a + "q_a_proj.weight"] @ x[b, t],
                                                     p[a + "q_a_layernorm.weight"], eps)
            kva = p[a + "kv_a_proj_with_mqa.weight"] @ x[b, t]
            kv = p[a + "kv_b_proj.weight"] @ norm_loop(kva[:rkv], p[a + "kv_a_layernorm.weight"], eps)
            kpe = rot(kva[rkv:], t)
            qs.append([torch.cat([q[h * (dn + dr):h * (dn + dr) + dn],
                                  rot(q[h * (dn + dr) + dn:(h + 1) * (dn + dr)], t)]) for h in range(H)])
            ks.append([torch.cat([kv[h * (dn + dv):h * (dn + dv) + dn], kpe]) for h in range(H)])
            vs.append([kv[h * (dn + dv) + dn:(h + 1) * (dn + dv)] for h in range(H)])
        for t in range(T):
            heads = []
            for h in range(H):
                sc = torch.stack([qs[t][h] @ ks[j][h] * scale for j in range(t + 1)])
                pr = torch.softmax(sc, 0)
                heads.append(sum(pr[j] * vs[j][h] for j in range(t + 1)))
            y[b, t] = p[a + "o_proj.weight"] @ torch.cat(heads)
    return y


def brute_force_route(sb_row, s_row, cfg):
    """One token: list of (expert, weight) from plain Python lists."""
    E, G, K = cfg.n_routed_experts, cfg.n_group, cfg.num_experts_per_tok
    per = E // G
    group_scores = []
    for g in range(G):
        vals = sorted(sb_row[g * per:(g + 1) * per], reverse=True)
        group_scores.append((sum(vals[:min(2, per)]), g))
    kept = [g for _, g in sorted(group_scores, key=lambda t: -t[0])[:cfg.topk_group]]
    cands = [(sb_row[e], e) for g in kept for e in range(g * per, (g + 1) * per)]
    chosen = [e for _, e in sorted(cands, key=lambda t: -t[0])[:K]]
    total = sum(s_row[e] for e in chosen)
    return {e: cfg.routed_scaling_factor * s_row[e] / total for e in chosen}




def swiglu_loop(v, p, q):
    # v [d] one token; q the weight-name prefix of one MLP
    a = p[q + "gate_proj.weight"] @ v
    return p[q + "down_proj.weight"] @ (a * torch.sigmoid(a) * (p[q + "up_proj.weight"] @ v))


def moe_loops(x, p, pre, cfg):
    """x [B, T, d] -> (y [B, T, d], counts list [E], balance loss of the layer)."""
    B, T, d = x.shape
    E, K = cfg.n_routed_experts, cfg.num_experts_per_tok
    m = pre + "mlp."
    bias = p[m + "gate.e_score_correction_bias"].tolist()
    y = torch.zeros_like(x)
    counts = [0] * E
    balance = 0.0
    for b in range(B):
        rows = []
        for t in range(T):
            v = x[b, t]
            s_row = torch.sigmoid(p[m + "gate.weight"] @ v).tolist()
            rows.append(s_row)
            chosen = brute_force_route([a + c for a, c in zip(s_row, bias)], s_row, cfg)
            y[b, t] = swiglu_loop(v, p, m + "shared_experts.") + sum(
                w * swiglu_loop(v, p, f"{m}experts.{e}.") for e, w in chosen.items())
            for e in chosen:
                counts[e] += 1
        for i in range(E):
            hits = sum(1 for r in rows if i in sorted(range(E), key=lambda e: -r[e])[:K])
            balance += (E / (K * T) * hits) * (sum(r[i] / sum(r) for r in rows) / T)
    return y, counts, balance / B


def forward_loops(p, tokens, cfg):
    """Whole model with MTP by the loops above. Returns (logits [B,T,V], [mtp logits],
    main loss, [mtp losses], balance, total, counts {layer: [E]})."""
    D, eps = cfg.num_nextn_predict_layers, cfg.rms_norm_eps
    B, T = tokens.shape[0], tokens.shape[1] - D - 1
    counts, balance = {}, 0.0

    def layer(h, idx):
        pre = f"model.layers.{idx}."
        xn = torch.stack([torch.stack([norm_loop(h[b, t], p[pre + "input_layernorm.weight"], eps)
                                       for t in range(T)]) for b in range(B)])
        h = h + mla_loops(xn, p, pre, cfg)
        xn = torch.stack([torch.stack([norm_loop(h[b, t], p[pre + "post_attention_layernorm.weight"], eps)
                                       for t in range(T)]) for b in range(B)])
        if pre + "mlp.gate.weight" in p:
            y, c, bal = moe_loops(xn, p, pre, cfg)
            counts[idx] = c
            return h + y, bal
        return h + torch.stack([torch.stack([swiglu_loop(xn[b, t], p, pre + "mlp.") for t in range(T)])
                                for b in range(B)]), 0.0

    def head(h, norm_name):
        return torch.stack([torch.stack([p["lm_head.weight"] @ norm_loop(h[b, t], p[norm_name], eps)
                                         for t in range(T)]) for b in range(B)])

    def ce(logits, targets):
        return sum(float(torch.logsumexp(logits[b, t], 0) - logits[b, t, targets[b, t]])
                   for b in range(B) for t in range(T)) / (B * T)
    emb = p["model.embed_tokens.weight"]
    h = torch.stack([torch.stack([emb[int(tokens[b, t])] for t in range(T)]) for b in range(B)])
    for idx in range(cfg.num_hidden_layers):
        h, bal = layer(h, idx)
        balance += bal
    logits = head(h, "model.norm.weight")
    main = ce(logits, tokens[:, 1:])
    mtp_logits, mtp = [], []
    for k in range(1, D + 1):
        idx = cfg.num_hidden_layers + k - 1
        pre = f"model.layers.{idx}."
        W = p[pre + "eh_proj.weight"]
        d = W.shape[0]
        # eh_proj columns 0:d act on the embedding of token i+k, d:2d on the hidden state
        h = torch.stack([torch.stack([
            W[:, :d] @ norm_loop(emb[int(tokens[b, t + k])], p[pre + "enorm.weight"], eps)
            + W[:, d:] @ norm_loop(h[b, t], p[pre + "hnorm.weight"], eps)
            for t in range(T)]) for b in range(B)])
        h, bal = layer(h, idx)
        balance += bal
        mtp_logits.append(head(h, pre + "shared_head.norm.weight"))
        mtp.append(ce(mtp_logits[-1], tokens[:, k + 1:]))
    total = main + (cfg.mtp_loss_lambda / D) * sum(mtp) + cfg.aux_loss_alpha * balance
    return logits, mtp_logits, main, mtp, balance, total, counts


# -----------------------------------------------------------------------------


class BlocksTest(unittest.TestCase):
    def test_rms_norm_value_and_gradcheck(self):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(3, 5, 7, generator=g, dtype=torch.float64) * 3
        w = torch.randn(7, generator=g, dtype=torch.float64)
        y = ref.rms_norm(x, torch.ones(7, dtype=torch.float64), 0.0)
        torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(3, 5, dtype=torch.float64))
        self.assertTrue(torch.autograd.gradcheck(lambda a, b: ref.rms_norm(a, b, 1e-6),
                                                 (leaf(x), leaf(w))))

    def test_rope_is_interleaved_complex_rotation(self):
        cfg = micro_cfg(qk_rope_head_dim=8)
        T = 6
        cos, sin = ref.rope_tables(cfg, T, torch.float64)
        g = torch.Generator().manual_seed(2)
        x = torch.randn(2, T, 3, 8, generator=g, dtype=torch.float64)
        y = ref.apply_rope(x, cos[:, None, :], sin[:, None, :])
        # independent: pairs (2i, 2i+1) as complex numbers times exp(i * pos * theta^(-2i/dr))
        freq = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
        angle = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]
        xc = torch.view_as_complex(x.reshape(2, T, 3, 4, 2).contiguous())
        want = torch.view_as_real(xc * torch.polar(torch.ones_like(angle), angle)[:, None, :])
        torch.testing.assert_close(y, want.reshape(2, T, 3, 8))
        self.assertTrue(torch.autograd.gradcheck(
            lambda a: ref.apply_rope(a, cos[:, None, :], sin[:, None, :]), (leaf(x),)))

    def test_yarn_bands_and_scale_of_v3(self):
        cfg = ref.config_from_dict(V3)
        cos, sin = ref.rope_tables(cfg, 2, torch.float64)
        freq = torch.atan2(sin[1], cos[1])          # angle at position 1 = frequency
        base = 10000.0 ** (-torch.arange(32, dtype=torch.float64) * 2 / 64)
        # ramp_i = clamp((i - 10) / (23 - 10), 0, 1): dims <= 10 keep theirs, >= 23 divided by 40
        torch.testing.assert_close(freq[:11], base[:11])
        torch.testing.assert_close(freq[23:], base[23:] / 40)
        mid = torch.arange(11, 23)
        ramp = (mid - 10) / 13.0
        torch.testing.assert_close(freq[11:23], base[11:23] * (1 - ramp) + base[11:23] / 40 * ramp)
        self.assertAlmostEqual(ref.softmax_scale(cfg), 0.1352338, places=6)
        self.assertAlmostEqual(ref.softmax_scale(micro_cfg()), 8 ** -0.5)

    def test_mla_matches_loops_and_gradcheck(self):
        cfg = micro_cfg()
        p = {n: leaf(t) for n, t in ref.init_random(cfg, 3, std=0.3).items()}
        B, T, pre = 2, 5, "model.layers.0."
        cos, sin = ref.rope_tables(cfg, T, torch.float64)
        x = torch.randn(B, T, cfg.hidden_size, generator=torch.Generator().manual_seed(4),
                        dtype=torch.float64)
        y = ref.mla(x, p, pre, cfg, cos, sin)
        torch.testing.assert_close(y, mla_loops(x, p, pre, cfg))
        names = [pre + "self_attn." + n + ".weight" for n in
                 ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "kv_a_layernorm")]

        def f(xx, *ws):
            q = dict(p)
            q.update(zip(names, ws))
            return ref.mla(xx, q, pre, cfg, cos, sin)
        self.assertTrue(torch.autograd.gradcheck(f, (leaf(x),) + tuple(p[n] for n in names)))


# -----------------------------------------------------------------------------


class MoETest(unittest.TestCase):
    def test_router_matches_brute_force(self):
        for over, seed in ((dict(), 5), (dict(n_routed_experts=16, n_group=4, topk_group=2,
                                               num_experts_per_tok=4), 6),
                           (dict(n_routed_experts=12, n_group=3, topk_group=3,
                                 num_experts_per_tok=3), 7),
                           (dict(n_routed_experts=6, n_group=6, topk_group=3,
                                 num_experts_per_tok=2), 8)):
            cfg = micro_cfg(**over)
            g = torch.Generator().manual_seed(seed)
            E = cfg.n_routed_experts
            x = torch.randn(64, cfg.hidden_size, generator=g, dtype=torch.float64)
            gate = torch.randn(E, cfg.hidden_size, generator=g, dtype=torch.float64) * 0.3
            bias = torch.randn(E, generator=g, dtype=torch.float64) * 0.3   # bias changes choices
            idx, w, s, _ = ref.route(x, gate, bias, cfg)
            changed = 0
            for n in range(64):
                s_row = [1 / (1 + math.exp(-float(v))) for v in gate @ x[n]]
                sb_row = [a + float(b) for a, b in zip(s_row, bias)]
                want = brute_force_route(sb_row, s_row, cfg)
                got = {int(e): float(v) for e, v in zip(idx[n], w[n])}
                self.assertEqual(set(got), set(want), f"token {n} config {over}")
                for e in want:
                    self.assertAlmostEqual(got[e], want[e], places=12)
                unbiased = set(sorted(range(E), key=lambda e: -s_row[e])[:cfg.num_experts_per_tok])
                changed += unbiased != set(want)
            self.assertGreater(changed, 0, "test weak: bias and groups never changed a choice")

    def test_balance_loss_matches_loops(self):
        cfg = micro_cfg()
        B, T, E, K = 3, 7, cfg.n_routed_experts, cfg.num_experts_per_tok
        s = torch.rand(B * T, E, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        got = float(ref.sequence_balance_loss(s, B, T, cfg))
        total = 0.0
        for b in range(B):
            rows = [s[b * T + t].tolist() for t in range(T)]
            for i in range(E):
                hits = sum(1 for r in rows if i in sorted(range(E), key=lambda e: -r[e])[:K])
                f_i = E / (K * T) * hits
                P_i = sum(r[i] / sum(r) for r in rows) / T
                total += f_i * P_i
        self.assertAlmostEqual(got, total / B, places=12)

    def _margin_input(self, cfg, p, pre, B, T):
        # routing margins far from ties, so finite differences never flip a choice
        for seed in range(100):
            x = torch.randn(B, T, cfg.hidden_size, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)
            _, _, _, m = ref.route(x.view(B * T, -1), p[pre + "mlp.gate.weight"],
                                   p[pre + "mlp.gate.e_score_correction_bias"], cfg)
            if min(m.values()) > 1e-3:
                return x
        raise AssertionError("no input with routing margins > 1e-3 found")

    def test_moe_matches_loops_and_gradcheck(self):
        cfg = micro_cfg()
        pre = "model.layers.1."
        p = {n: leaf(t) for n, t in ref.init_random(cfg, 10, std=0.3).items()}
        p[pre + "mlp.gate.e_score_correction_bias"].requires_grad_(False)
        B, T = 2, 4
        x = self._margin_input(cfg, p, pre, B, T)
        stats = {"expert_counts": {}, "balance": [], "margins": {}}
        y = ref.moe(x, p, pre, cfg, stats, 1)
        want, counts, balance = moe_loops(x, p, pre, cfg)
        torch.testing.assert_close(y, want)
        self.assertEqual(stats["expert_counts"][1].tolist(), counts)
        self.assertAlmostEqual(float(stats["balance"][0]), balance, places=12)
        self.assertTrue(counts[3] > 0 and counts[5] > 0, "experts under gradcheck must get tokens")
        m = pre + "mlp."
        names = [m + "gate.weight", m + "experts.3.up_proj.weight", m + "experts.5.down_proj.weight",
                 m + "shared_experts.gate_proj.weight"]

        def f(xx, *ws):
            q = dict(p)
            q.update(zip(names, ws))
            st = {"expert_counts": {}, "balance": [], "margins": {}}
            out = ref.moe(xx, q, pre, cfg, st, 1)
            return out, st["balance"][0]
        self.assertTrue(torch.autograd.gradcheck(f, (leaf(x),) + tuple(p[n] for n in names)))


# -----------------------------------------------------------------------------


class ModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cfg = ref.load_config(os.path.join(CONFIGS, "nano.json"))
        cls.params = ref.init_random(cls.cfg, 11)
        D = cls.cfg.num_nextn_predict_layers
        cls.T = 12
        cls.tokens = torch.randint(0, cls.cfg.vocab_size, (2, cls.T + D + 1),
                                   generator=torch.Generator().manual_seed(12))

    def loss(self, params):
        return ref.forward(params, self.tokens, self.cfg)

    def test_directional_derivatives_of_total_loss(self):
        out, margins = ref.run_reference(self.cfg, self.params, self.tokens)
        self.assertGreater(min(min(m.values()) for m in margins.values()), 1e-5)
        trainable = [n for n in self.params if not n.endswith("e_score_correction_bias")]
        g = torch.Generator().manual_seed(13)
        # all parameters at once, then the shared embedding/head only, then one MTP MoE expert
        subsets = (trainable, ["model.embed_tokens.weight", "lm_head.weight"],
                   [n for n in trainable if n.startswith("model.layers.3.mlp.")])
        h = 1e-5
        for names in subsets:
            direction = {n: torch.randn(self.params[n].shape, generator=g, dtype=torch.float64)
                         for n in names}
            analytic = sum(float((out["grad." + n] * direction[n]).sum()) for n in names)

            def at(eps):
                q = dict(self.params)
                for n in names:
                    q[n] = self.params[n] + eps * direction[n]
                r = self.loss(q)
                return float(r["loss_total"]), r["expert_counts"]
            (lp, cp), (lm, cm) = at(h), at(-h)
            for layer in cp:   # same routing on both sides (counts as a proxy; margins checked above)
                self.assertTrue(torch.equal(cp[layer], cm[layer]))
            numeric = (lp - lm) / (2 * h)
            self.assertAlmostEqual(analytic, numeric, delta=1e-7 * max(1.0, abs(numeric)),
                                   msg=f"{len(names)} parameters starting {names[0]}")

    def test_forward_matches_loop_model(self):
        tokens = self.tokens[:1, :8]          # B = 1, T = 6 (+ D + 1)
        r = ref.forward(self.params, tokens, self.cfg)
        logits, mtp_logits, main, mtp, balance, total, counts = forward_loops(self.params, tokens, self.cfg)
        torch.testing.assert_close(r["logits"], logits)
        torch.testing.assert_close(r["mtp_logits"][0], mtp_logits[0])
        for got, want in ((r["loss_main"], main), (r["loss_mtp"][0], mtp[0]),
                          (r["loss_balance"], balance), (r["loss_total"], total)):
            self.assertAlmostEqual(float(got), want, places=12)
        self.assertEqual({k: v.tolist() for k, v in r["expert_counts"].items()}, counts)

    def test_forward_matches_loop_model_mtp_depth_2(self):
        cfg = micro_cfg(num_nextn_predict_layers=2, num_hidden_layers=2, first_k_dense_replace=1)
        params = ref.init_random(cfg, 14, std=0.2)
        tokens = torch.randint(0, cfg.vocab_size, (2, 5 + 2 + 1), generator=torch.Generator().manual_seed(15))
        r = ref.forward(params, tokens, cfg)
        logits, mtp_logits, main, mtp, balance, total, counts = forward_loops(params, tokens, cfg)
        self.assertEqual(sorted(counts), [1, 2, 3])       # main MoE layer 1, MTP modules at 2 and 3
        for k in range(2):
            torch.testing.assert_close(r["mtp_logits"][k], mtp_logits[k])
            self.assertAlmostEqual(float(r["loss_mtp"][k]), mtp[k], places=12)
        self.assertAlmostEqual(float(r["loss_total"]), total, places=12)

    def test_loss_composition_and_balance(self):
        r = self.loss(self.params)
        cfg = self.cfg
        want = (r["loss_main"] + cfg.mtp_loss_lambda * r["loss_mtp"][0]
                + cfg.aux_loss_alpha * r["loss_balance"])
        self.assertAlmostEqual(float(r["loss_total"]), float(want), places=12)
        # main CE by hand from the logits
        lp = torch.log_softmax(r["logits"], -1)
        tgt = self.tokens[:, 1:self.T + 1]
        ce = -lp.gather(-1, tgt[..., None]).mean()
        self.assertAlmostEqual(float(r["loss_main"]), float(ce), places=12)
        # near-uniform random init: CE close to ln V; balance ~1 per MoE layer (3 of them)
        self.assertLess(abs(float(r["loss_main"]) - math.log(cfg.vocab_size)), 0.5)
        self.assertEqual(sorted(r["expert_counts"]), [1, 2, 3])
        for c in r["expert_counts"].values():
            self.assertEqual(int(c.sum()), 2 * self.T * cfg.num_experts_per_tok)
        self.assertGreater(float(r["loss_balance"]), 3 * 0.9)

    def test_token_alignment_of_main_and_mtp(self):
        r0 = self.loss(self.params)
        T = self.T
        tok = self.tokens.clone()
        tok[:, T] = (tok[:, T] + 1) % self.cfg.vocab_size   # seen only by MTP position T-1
        r1 = ref.forward(self.params, tok, self.cfg)
        torch.testing.assert_close(r1["logits"], r0["logits"])
        torch.testing.assert_close(r1["mtp_logits"][0][:, :T - 1], r0["mtp_logits"][0][:, :T - 1])
        self.assertFalse(torch.allclose(r1["mtp_logits"][0][:, T - 1], r0["mtp_logits"][0][:, T - 1]))
        # causality: changing token T-1 leaves logits before T-1 unchanged
        tok = self.tokens.clone()
        tok[:, T - 1] = (tok[:, T - 1] + 1) % self.cfg.vocab_size
        r2 = ref.forward(self.params, tok, self.cfg)
        torch.testing.assert_close(r2["logits"][:, :T - 1], r0["logits"][:, :T - 1])

    def test_float32_agrees_with_float64(self):
        r64 = self.loss(self.params)
        r32 = ref.forward({n: t.float() for n, t in self.params.items()}, self.tokens, self.cfg)
        torch.testing.assert_close(r32["logits"].double(), r64["logits"], rtol=1e-4, atol=1e-5)
        self.assertAlmostEqual(float(r32["loss_total"]), float(r64["loss_total"]), places=5)

    def test_sgd_steps_and_bias_update(self):
        lr, gamma = 0.05, 1e-3
        got = ref.train_sgd(self.cfg, self.params, self.tokens, 2, lr, gamma)
        out, _ = ref.run_reference(self.cfg, self.params, self.tokens)
        self.assertAlmostEqual(float(got["train.loss_total"][0]), float(out["loss.total"]), places=12)
        stepped = {}
        for n, t in self.params.items():
            stepped[n] = t - lr * out["grad." + n] if "grad." + n in out else t.clone()
        for layer in (1, 2, 3):
            c = out[f"expert_counts.{layer}"]
            torch.testing.assert_close(got[f"train.expert_counts.{layer}"][0], c)
            b = f"model.layers.{layer}.mlp.gate.e_score_correction_bias"
            mean = float(c.mean())
            want = [float(v) + gamma * (int(mean > ci) - int(mean < ci)) for v, ci in zip(self.params[b], c.tolist())]
            stepped[b] = torch.tensor(want, dtype=torch.float64)
        r1 = self.loss(stepped)
        self.assertAlmostEqual(float(got["train.loss_total"][1]), float(r1["loss_total"]), places=12)
        self.assertLess(float(got["train.loss_total"][1]), float(got["train.loss_total"][0]))

    def test_loads_fp8_block_scaled_weights(self):
        # one nano matrix stored as FP8 bytes + its [ceil(out/128), ceil(in/128)] scale, decoded
        # by hand; then a 200 x 300 matrix whose edge blocks are partial in both dimensions
        cfg = self.cfg
        name = "model.layers.0.self_attn.kv_b_proj.weight"
        shape = ref.param_shapes(cfg)[name]
        rng = np.random.default_rng(16)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "w.safetensors")
            arrays = {n: t.numpy() for n, t in self.params.items()}
            bits = rng.integers(0, 126, size=shape).astype(np.uint8)   # positive, no NaN
            bits[::3] |= 0x80                                          # some negatives
            scale = rng.uniform(0.5, 2.0, size=(-(-shape[0] // 128), -(-shape[1] // 128))).astype(np.float32)
            arrays[name] = bits
            arrays[name + "_scale_inv"] = scale
            safetensors_io.save(path, arrays, dtypes={name: "F8_E4M3"})
            loaded = ref.load_weights(path, cfg, torch.float64)
            big = (np.arange(200)[:, None] * 300 + np.arange(300)[None, :]).astype(np.uint8)
            safetensors_io.save(path, {"q": big, "q_scale_inv": np.array([[2.0, 3.0, 5.0], [7.0, 11.0, 13.0]],
                                                                           np.float32)}, dtypes={"q": "F8_E4M3"})
            raw, _, _ = safetensors_io.load(path)
        want = np.empty(shape)
        for i in range(shape[0]):
            for j in range(shape[1]):
                b = int(bits[i, j])
                sign = -1.0 if b & 0x80 else 1.0
                e, mnt = (b >> 3) & 0xF, b & 7
                v = sign * (mnt / 8 * 2.0 ** -6 if e == 0 else (1 + mnt / 8) * 2.0 ** (e - 7))
                want[i, j] = v * scale[i // 128, j // 128]
        np.testing.assert_array_equal(loaded[name].numpy(), want)
        torch.testing.assert_close(loaded["lm_head.weight"], self.params["lm_head.weight"])
        q = ref.dequantize_blocks(torch.from_numpy(raw["q"]).double(), torch.from_numpy(raw["q_scale_inv"]).double())
        self.assertEqual(float(q[150, 290] / torch.from_numpy(raw["q"])[150, 290]), 13.0)
        self.assertEqual(float(q[10, 130] / torch.from_numpy(raw["q"])[10, 130]), 3.0)

    def test_command_line_round_trip(self):
        script = os.path.join(HERE, "ds3_reference.py")
        cfg_path = os.path.join(CONFIGS, "nano.json")
        with tempfile.TemporaryDirectory() as tmp:
            w, b, o = (os.path.join(tmp, f) for f in ("w.safetensors", "b.safetensors", "o.safetensors"))
            self.assertEqual(ref.main(["--config", cfg_path, "--init-random", "11", "--write-weights", w,
                                       "--write-batch", b, "--batch-size", "2", "--seq-len", "8"]), 0)
            self.assertEqual(ref.main(["--config", cfg_path, "--weights", w, "--batch", b,
                                       "--out", o, "--dtype", "float64"]), 0)
            out, infos, meta = safetensors_io.load(o)
            self.assertTrue(os.path.exists(script))
        names = set(out)
        for n in ("logits", "mtp_logits.1", "loss.main", "loss.mtp.1", "loss.balance", "loss.total",
                  "expert_counts.1", "expert_counts.2", "expert_counts.3"):
            self.assertIn(n, names)
        self.assertEqual(out["logits"].shape, (2, 8, 256))
        self.assertEqual(out["loss.total"].shape, (1,))
        grads = {n[5:] for n in names if n.startswith("grad.")}
        want = {n for n in ref.param_shapes(self.cfg) if not n.endswith("e_score_correction_bias")}
        self.assertEqual(grads, want)
        self.assertEqual(infos["expert_counts.1"].dtype, "F64")
        self.assertIn("routing_margins", meta)


# -----------------------------------------------------------------------------


class CountTest(unittest.TestCase):
    def test_v3_counts(self):
        cfg = ref.config_from_dict(V3)
        c = ref.count_parameters(cfg)
        self.assertEqual(c["main"], 671_026_419_200)
        self.assertEqual(c["mtp_unique"], 11_610_068_224)
        self.assertEqual(c["activated"], 37_552_297_472)
        v3_json = os.path.join(CONFIGS, "v3.json")   # the C++ preset file, if present
        if os.path.exists(v3_json):
            self.assertEqual(ref.count_parameters(ref.load_config(v3_json)), c)

    def test_preset_counts_of_section_11(self):
        for name, main, mtp, act in (("nano", 200_336, 74_632, 126_608),
                                     ("tiny", 8_928_560, 2_061_840, 5_389_616)):
            c = ref.count_parameters(ref.load_config(os.path.join(CONFIGS, name + ".json")))
            self.assertEqual((c["main"], c["mtp_unique"], c["activated"]), (main, mtp, act), name)

    def test_invalid_configs_are_rejected(self):
        for over, pattern in ((dict(n_group=3), "not divisible by n_group"),
                              (dict(topk_group=5), "topk_group"),
                              (dict(num_experts_per_tok=5), "above the 4 experts"),
                              (dict(scoring_func="softmax"), "scoring_func"),
                              (dict(rope_scaling={"type": "linear", "factor": 2}), "rope_scaling"),
                              (dict(num_attention_heads=0), "num_attention_heads")):
            with self.assertRaisesRegex(ValueError, pattern):
                micro_cfg(**over)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
