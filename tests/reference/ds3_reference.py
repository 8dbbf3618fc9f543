#!/usr/bin/python3
"""Independent PyTorch reference of the DeepSeek-V3 model (MLA, DeepSeekMoE with
bias-balanced group-limited routing, MTP), for checking the C++ trainer.

Written from ../../shared/reference/deepseek-v3.md (sections 1, 2, 4, 5, 10, 11) and the
pinned conventions of trainer/configs/README.md only; it does not follow the C++ code.
Clean and plain rather than fast (llm.c train_gpt2.py spirit): one function per piece of
math, a flat dict of parameters keyed by the Hugging Face names, shapes in comments.

Legend: B = batch, T = sequence length, d = hidden_size, V = vocab, H = heads,
dn/dr/dv = qk_nope/qk_rope/v head dims, dqk = dn + dr, E = routed experts, K = experts per
token, G = expert groups, N = B*T tokens.

Command lines (the C++ comparison test calls the first):
  ds3_reference.py --config C.json --weights W.safetensors --batch B.safetensors \
                   --out OUT.safetensors --dtype float64|float32
  ds3_reference.py --config C.json --init-random SEED --write-weights W.safetensors \
                   [--write-batch B.safetensors --batch-size 2 --seq-len 16]
OUT holds logits, mtp_logits.<k>, loss.{main,mtp.<k>,balance,total}, grad.<param> and
expert_counts.<layer>; its __metadata__ has the minimum routing margins per MoE layer.
"""

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

# -----------------------------------------------------------------------------
# Configuration


@dataclass
class Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    first_k_dense_replace: int
    num_attention_heads: int
    q_lora_rank: int            # 0 means no query compression (q_proj instead)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    n_group: int
    topk_group: int
    routed_scaling_factor: float
    moe_layer_freq: int = 1
    norm_topk_prob: bool = True
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict = None
    max_position_embeddings: int = 4096
    num_nextn_predict_layers: int = 1
    aux_loss_alpha: float = 1e-4
    mtp_loss_lambda: float = 0.3
    extra: dict = field(default_factory=dict)

    @property
    def qk_head_dim(self):
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer):
        # HF rule: MoE from first_k_dense_replace on, every moe_layer_freq-th layer.
        # MTP layers (layer >= num_hidden_layers) are always MoE.
        if layer >= self.num_hidden_layers:
            return True
        return layer >= self.first_k_dense_replace and layer % self.moe_layer_freq == 0

    def mtp_layer(self, k):
        """Weight-name layer index of MTP module k (1-based)."""
        return self.num_hidden_layers + k - 1


def config_from_dict(d):
    known = {f for f in Config.__dataclass_fields__ if f != "extra"}
    args = {k: v for k, v in d.items() if k in known}
    if args.get("q_lora_rank") is None:
        args["q_lora_rank"] = 0
    for key in ("scoring_func", "topk_method"):
        want = {"scoring_func": "sigmoid", "topk_method": "noaux_tc"}[key]
        if d.get(key, want) != want:
            raise ValueError(f"config: {key} = {d[key]!r} is not supported (only {want!r})")
    cfg = Config(**args, extra={k: v for k, v in d.items() if k not in known})
    validate(cfg)
    return cfg


def load_config(path):
    with open(path) as f:
        return config_from_dict(json.load(f))


def validate(cfg):
    E, G = cfg.n_routed_experts, cfg.n_group
    if E % G != 0:
        raise ValueError(f"config: n_routed_experts {E} not divisible by n_group {G}")
    if not 1 <= cfg.topk_group <= G:
        raise ValueError(f"config: topk_group {cfg.topk_group} not in [1, n_group {G}]")
    if not 1 <= cfg.num_experts_per_tok <= cfg.topk_group * (E // G):
        raise ValueError(f"config: num_experts_per_tok {cfg.num_experts_per_tok} above the "
                         f"{cfg.topk_group * (E // G)} experts of the allowed groups")
    if cfg.qk_rope_head_dim % 2 != 0:
        raise ValueError(f"config: qk_rope_head_dim {cfg.qk_rope_head_dim} must be even")
    if cfg.num_nextn_predict_layers < 0:
        raise ValueError("config: num_nextn_predict_layers must be >= 0")
    for name in ("hidden_size", "num_attention_heads", "vocab_size", "n_routed_experts", "n_group"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"config: {name} = {getattr(cfg, name)} must be >= 1")
    rs = cfg.rope_scaling
    if rs:
        kind = rs.get("type", rs.get("rope_type", "yarn"))
        if kind != "yarn" or "factor" not in rs:
            raise ValueError(f"config: rope_scaling {rs} is not supported (only yarn with a factor)")


# -----------------------------------------------------------------------------
# Parameter shapes (the single source for init, loading and counting)


def attention_shapes(cfg, prefix):
    d, H = cfg.hidden_size, cfg.num_attention_heads
    rq, rkv = cfg.q_lora_rank, cfg.kv_lora_rank
    s = {}
    s[prefix + "input_layernorm.weight"] = (d,)
    if rq > 0:
        s[prefix + "self_attn.q_a_proj.weight"] = (rq, d)
        s[prefix + "self_attn.q_a_layernorm.weight"] = (rq,)
        s[prefix + "self_attn.q_b_proj.weight"] = (H * cfg.qk_head_dim, rq)
    else:
        s[prefix + "self_attn.q_proj.weight"] = (H * cfg.qk_head_dim, d)
    s[prefix + "self_attn.kv_a_proj_with_mqa.weight"] = (rkv + cfg.qk_rope_head_dim, d)
    s[prefix + "self_attn.kv_a_layernorm.weight"] = (rkv,)
    s[prefix + "self_attn.kv_b_proj.weight"] = (H * (cfg.qk_nope_head_dim + cfg.v_head_dim), rkv)
    s[prefix + "self_attn.o_proj.weight"] = (d, H * cfg.v_head_dim)
    s[prefix + "post_attention_layernorm.weight"] = (d,)
    return s


def mlp_shapes(prefix, d, inter):
    return {prefix + "gate_proj.weight": (inter, d),
            prefix + "up_proj.weight": (inter, d),
            prefix + "down_proj.weight": (d, inter)}


def ffn_shapes(cfg, prefix, layer):
    d = cfg.hidden_size
    if not cfg.is_moe_layer(layer):
        return mlp_shapes(prefix + "mlp.", d, cfg.intermediate_size)
    E, f = cfg.n_routed_experts, cfg.moe_intermediate_size
    s = {prefix + "mlp.gate.weight": (E, d), prefix + "mlp.gate.e_score_correction_bias": (E,)}
    for e in range(E):
        s.update(mlp_shapes(f"{prefix}mlp.experts.{e}.", d, f))
    if cfg.n_shared_experts > 0:
        s.update(mlp_shapes(prefix + "mlp.shared_experts.", d, cfg.n_shared_experts * f))
    return s


def param_shapes(cfg):
    """Ordered dict: HF parameter name -> shape, main model first, then MTP modules."""
    d, V = cfg.hidden_size, cfg.vocab_size
    s = {"model.embed_tokens.weight": (V, d)}
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        s.update(attention_shapes(cfg, p))
        s.update(ffn_shapes(cfg, p, layer))
    s["model.norm.weight"] = (d,)
    s["lm_head.weight"] = (V, d)
    for k in range(1, cfg.num_nextn_predict_layers + 1):
        layer = cfg.mtp_layer(k)
        p = f"model.layers.{layer}."
        s[p + "enorm.weight"] = (d,)
        s[p + "hnorm.weight"] = (d,)
        s[p + "eh_proj.weight"] = (d, 2 * d)
        s.update(attention_shapes(cfg, p))
        s.update(ffn_shapes(cfg, p, layer))
        s[p + "shared_head.norm.weight"] = (d,)
    return s


def layer_of(name):
    parts = name.split(".")
    return int(parts[2]) if parts[:2] == ["model", "layers"] else None


def count_parameters(cfg):
    """Returns dict(main, mtp_unique, activated) from the shapes the model allocates.

    activated: the main model's parameters one token touches: everything except the
    routed experts it is not sent to (E - K per MoE layer); counts the whole embedding
    table and output head, the gate and the bias.
    """
    K = cfg.num_experts_per_tok
    main = mtp = inactive = 0
    for name, shape in param_shapes(cfg).items():
        n = math.prod(shape)
        layer = layer_of(name)
        if layer is not None and layer >= cfg.num_hidden_layers:
            mtp += n
            continue
        main += n
        if ".mlp.experts." in name and int(name.split(".")[5]) >= K:
            inactive += n
    return {"main": main, "mtp_unique": mtp, "activated": main - inactive}


def init_random(cfg, seed, std=0.02, norm_noise=0.1, bias_std=0.01):
    """Random weights (float64): matrices N(0, std^2), norms 1 + N(0, norm_noise^2),
    bias N(0, bias_std^2) (stored as FP32 like the release)."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("e_score_correction_bias"):
            w = (torch.randn(shape, generator=g, dtype=torch.float64) * bias_std).float().double()
        elif len(shape) == 1:
            w = 1.0 + norm_noise * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            w = std * torch.randn(shape, generator=g, dtype=torch.float64)
        params[name] = w
    return params


# -----------------------------------------------------------------------------
# Building blocks


def rms_norm(x, w, eps):
    # x [..., C], w [C] -> [..., C]; statistics in at least FP32
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return y.to(x.dtype) * w


def yarn_get_mscale(factor, mscale=1.0):
    return 0.1 * mscale * math.log(factor) + 1.0 if factor > 1.0 else 1.0


def rope_tables(cfg, T, dtype):
    """cos, sin [T, dr/2] for positions 0..T-1 (with YaRN frequency blend and
    attention factor when cfg.rope_scaling is set)."""
    dr, theta = cfg.qk_rope_head_dim, cfg.rope_theta
    i = torch.arange(dr // 2, dtype=torch.float64)
    freq = theta ** (-2.0 * i / dr)                          # [dr/2]
    attn_factor = 1.0
    rs = cfg.rope_scaling
    if rs:
        factor = float(rs["factor"])
        orig = float(rs.get("original_max_position_embeddings", 4096))
        beta_fast, beta_slow = float(rs.get("beta_fast", 32)), float(rs.get("beta_slow", 1))

        def corr(n):  # dimension index whose wavelength makes n rotations in orig positions
            return dr * math.log(orig / (n * 2 * math.pi)) / (2 * math.log(theta))
        low = max(math.floor(corr(beta_fast)), 0)
        high = min(math.ceil(corr(beta_slow)), dr - 1)
        if low == high:
            high += 0.001
        ramp = ((i - low) / (high - low)).clamp(0.0, 1.0)
        freq = freq * (1.0 - ramp) + (freq / factor) * ramp
        attn_factor = (yarn_get_mscale(factor, rs.get("mscale", 1.0))
                       / yarn_get_mscale(factor, rs.get("mscale_all_dim", 1.0)))
    pos = torch.arange(T, dtype=torch.float64)
    angle = pos[:, None] * freq[None, :]                     # [T, dr/2]
    return (attn_factor * angle.cos()).to(dtype), (attn_factor * angle.sin()).to(dtype)


def softmax_scale(cfg):
    scale = cfg.qk_head_dim ** -0.5
    rs = cfg.rope_scaling
    if rs:
        scale *= yarn_get_mscale(float(rs["factor"]), rs.get("mscale_all_dim", 1.0)) ** 2
    return scale


def apply_rope(x, cos, sin):
    # Interleaved pairs: (x[2i], x[2i+1]) rotated by angle_i as one complex number.
    # x [B, T, ..., dr]; cos, sin broadcastable to [B, T, ..., dr/2]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack((y0, y1), dim=-1).flatten(-2)


def mla(x, p, prefix, cfg, cos, sin):
    """Multi-head latent attention, causal. x [B, T, d] -> [B, T, d]."""
    B, T, _ = x.shape
    H, dn, dr, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    a = prefix + "self_attn."
    eps = cfg.rms_norm_eps
    # query: low-rank compression, norm, up-projection
    if cfg.q_lora_rank > 0:
        c_q = rms_norm(x @ p[a + "q_a_proj.weight"].t(), p[a + "q_a_layernorm.weight"], eps)  # [B,T,rq]
        q = c_q @ p[a + "q_b_proj.weight"].t()                          # [B, T, H*dqk]
    else:
        q = x @ p[a + "q_proj.weight"].t()
    q = q.view(B, T, H, dn + dr)
    q_nope, q_pe = q[..., :dn], q[..., dn:]
    q_pe = apply_rope(q_pe, cos[:, None, :], sin[:, None, :])        # [B, T, H, dr]
    # key/value: joint compression plus the decoupled RoPE key shared by all heads
    kv_a = x @ p[a + "kv_a_proj_with_mqa.weight"].t()                 # [B, T, rkv + dr]
    c_kv, k_pe = kv_a[..., :cfg.kv_lora_rank], kv_a[..., cfg.kv_lora_rank:]
    k_pe = apply_rope(k_pe, cos, sin)                                 # [B, T, dr]
    kv = rms_norm(c_kv, p[a + "kv_a_layernorm.weight"], eps) @ p[a + "kv_b_proj.weight"].t()
    kv = kv.view(B, T, H, dn + dv)          # head h: rows h*(dn+dv).. : dn k_nope rows, dv v rows
    k_nope, v = kv[..., :dn], kv[..., dn:]
    q = torch.cat((q_nope, q_pe), dim=-1)                             # [B, T, H, dqk]
    k = torch.cat((k_nope, k_pe[:, :, None, :].expand(B, T, H, dr)), dim=-1)
    # causal softmax attention (scores and softmax in at least FP32)
    scores = torch.einsum("bthc,bshc->bhts", q, k) * softmax_scale(cfg)  # [B, H, T, T]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(causal, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    o = torch.einsum("bhts,bshc->bthc", probs, v).reshape(B, T, H * dv)
    return o @ p[a + "o_proj.weight"].t()                             # [B, T, d]


def swiglu_mlp(x, w_gate, w_up, w_down):
    # x [N, d]; w_gate/w_up [f, d]; w_down [d, f] -> [N, d]
    return (F.silu(x @ w_gate.t()) * (x @ w_up.t())) @ w_down.t()


# -----------------------------------------------------------------------------
# DeepSeekMoE: sigmoid gate, bias for selection only, group-limited top-k


def route(x, gate_w, bias, cfg):
    """x [N, d]. Returns (idx [N, K] selected experts, weights [N, K] differentiable,
    scores [N, E] the unbiased sigmoid scores, margins dict).

    Selection uses s + bias: group score = sum of the top-2 biased scores of the group
    (top-1 if a group has one expert), keep the topk_group best groups, top-K over the
    kept experts. Weights use the unbiased s of the selected experts, normalised to sum 1
    (norm_topk_prob), times routed_scaling_factor.
    """
    N = x.shape[0]
    E, G, K = cfg.n_routed_experts, cfg.n_group, cfg.num_experts_per_tok
    s = torch.sigmoid(x @ gate_w.t())                                 # [N, E]
    with torch.no_grad():
        sb = s.detach() + bias                                        # [N, E]
        per_group = sb.view(N, G, E // G)
        top_in_group = per_group.topk(min(2, E // G), dim=-1).values  # [N, G, 2]
        group_score = top_in_group.sum(-1)                            # [N, G]
        gs_sorted = group_score.sort(dim=-1, descending=True).values
        keep_groups = group_score.topk(cfg.topk_group, dim=-1).indices  # [N, topk_group]
        group_mask = torch.ones(N, G, dtype=torch.bool)
        group_mask.scatter_(1, keep_groups, False)                    # True = dropped group
        masked = sb.masked_fill(group_mask[:, :, None].expand(N, G, E // G).reshape(N, E),
                                float("-inf"))
        ms_sorted = masked.sort(dim=-1, descending=True).values
        idx = masked.topk(K, dim=-1).indices                          # [N, K]
        margins = {}
        if cfg.topk_group < G:
            margins["group"] = (gs_sorted[:, cfg.topk_group - 1] - gs_sorted[:, cfg.topk_group]).min().item()
        if K < cfg.topk_group * (E // G):
            margins["expert"] = (ms_sorted[:, K - 1] - ms_sorted[:, K]).min().item()
        if K < E:  # the balance loss's plain top-K of the unbiased scores (its f counts)
            s_sorted = s.detach().sort(dim=-1, descending=True).values
            margins["balance"] = (s_sorted[:, K - 1] - s_sorted[:, K]).min().item()
    w = s.gather(1, idx)                                              # [N, K]
    if cfg.norm_topk_prob:
        w = w / w.sum(-1, keepdim=True)
    return idx, w * cfg.routed_scaling_factor, s, margins


def sequence_balance_loss(s, B, T, cfg):
    """Per-sequence balance loss (paper eqs. 17-20), averaged over the B sequences; no alpha.
    s [B*T, E] unbiased sigmoid scores. f from plain top-K of s (no group limit, no
    bias), constant for the gradient; P from s normalised per token."""
    E, K = cfg.n_routed_experts, cfg.num_experts_per_tok
    s = s.view(B, T, E)
    with torch.no_grad():
        chosen = torch.zeros_like(s).scatter_(2, s.topk(K, dim=-1).indices, 1.0)
        f = chosen.sum(1) * (E / (K * T))                             # [B, E]
    P = (s / s.sum(-1, keepdim=True)).mean(1)                         # [B, E]
    return (f * P).sum(-1).mean()


def moe(x, p, prefix, cfg, stats, layer):
    """x [B, T, d] -> [B, T, d]. Appends this layer's counts, balance loss, margins to stats."""
    B, T, d = x.shape
    E, K = cfg.n_routed_experts, cfg.num_experts_per_tok
    m = prefix + "mlp."
    xf = x.reshape(B * T, d)                                          # [N, d]
    idx, w, s, margins = route(xf, p[m + "gate.weight"], p[m + "gate.e_score_correction_bias"], cfg)
    # batched experts: sort the N*K (token, expert) pairs by expert, run each expert on
    # its gathered rows, scatter-add the weighted outputs back to the tokens
    token_of = torch.arange(B * T).repeat_interleave(K)               # [N*K]
    expert_of = idx.reshape(-1)                                       # [N*K]
    order = torch.argsort(expert_of, stable=True)
    counts = torch.bincount(expert_of, minlength=E)                   # [E]
    token_sorted = token_of[order]
    weight_sorted = w.reshape(-1)[order]                              # [N*K]
    y = torch.zeros_like(xf)
    start = 0
    for e, n in enumerate(counts.tolist()):
        if n == 0:
            continue
        rows = token_sorted[start:start + n]
        ex = f"{m}experts.{e}."
        out = swiglu_mlp(xf[rows], p[ex + "gate_proj.weight"], p[ex + "up_proj.weight"],
                         p[ex + "down_proj.weight"])                  # [n, d]
        y.index_add_(0, rows, out * weight_sorted[start:start + n, None])
        start += n
    if cfg.n_shared_experts > 0:
        sh = m + "shared_experts."
        y = y + swiglu_mlp(xf, p[sh + "gate_proj.weight"], p[sh + "up_proj.weight"],
                           p[sh + "down_proj.weight"])
    stats["expert_counts"][layer] = counts
    stats["balance"].append(sequence_balance_loss(s, B, T, cfg))
    stats["margins"][layer] = margins
    return y.view(B, T, d)


def decoder_layer(h, p, layer, cfg, cos, sin, stats):
    prefix = f"model.layers.{layer}."
    eps = cfg.rms_norm_eps
    h = h + mla(rms_norm(h, p[prefix + "input_layernorm.weight"], eps), p, prefix, cfg, cos, sin)
    x = rms_norm(h, p[prefix + "post_attention_layernorm.weight"], eps)
    if cfg.is_moe_layer(layer):
        return h + moe(x, p, prefix, cfg, stats, layer)
    m = prefix + "mlp."
    B, T, d = x.shape
    y = swiglu_mlp(x.reshape(B * T, d), p[m + "gate_proj.weight"], p[m + "up_proj.weight"],
                   p[m + "down_proj.weight"])
    return h + y.view(B, T, d)


# -----------------------------------------------------------------------------
# Whole model with MTP and the losses


def forward(p, tokens, cfg):
    """p: dict name -> tensor (float32 or float64); tokens int64 [B, T + D + 1].

    Main model reads tokens[:, 0:T], predicts tokens[:, 1:T+1]. MTP module k combines
    hidden h^{k-1}_i (main: before the final norm) with emb(tokens[:, i+k]) as
    eh_proj([enorm(emb); hnorm(h)]), runs one MoE decoder layer (positions 0..T-1),
    predicts tokens[:, i+k+1] through shared_head.norm and the shared lm_head.
    Returns dict with logits, mtp_logits [k], losses and stats.
    """
    D = cfg.num_nextn_predict_layers
    B, T = tokens.shape[0], tokens.shape[1] - D - 1
    if T < 1:
        raise ValueError(f"tokens {list(tokens.shape)}: need T + D + 1 columns with T >= 1 (D = {D})")
    dtype = p["model.embed_tokens.weight"].dtype
    cos, sin = rope_tables(cfg, T, dtype)
    eps, V = cfg.rms_norm_eps, cfg.vocab_size
    stats = {"expert_counts": {}, "balance": [], "margins": {}}
    emb = p["model.embed_tokens.weight"]

    h = emb[tokens[:, :T]]                                            # [B, T, d]
    for layer in range(cfg.num_hidden_layers):
        h = decoder_layer(h, p, layer, cfg, cos, sin, stats)
    logits = rms_norm(h, p["model.norm.weight"], eps) @ p["lm_head.weight"].t()  # [B, T, V]
    loss_main = F.cross_entropy(logits.reshape(B * T, V), tokens[:, 1:T + 1].reshape(-1))

    mtp_logits, mtp_losses = [], []
    for k in range(1, D + 1):
        pre = f"model.layers.{cfg.mtp_layer(k)}."
        e = rms_norm(emb[tokens[:, k:k + T]], p[pre + "enorm.weight"], eps)   # [B, T, d]
        hn = rms_norm(h, p[pre + "hnorm.weight"], eps)                         # [B, T, d]
        h = torch.cat((e, hn), dim=-1) @ p[pre + "eh_proj.weight"].t()         # [B, T, d]
        h = decoder_layer(h, p, cfg.mtp_layer(k), cfg, cos, sin, stats)
        lk = rms_norm(h, p[pre + "shared_head.norm.weight"], eps) @ p["lm_head.weight"].t()
        mtp_logits.append(lk)
        mtp_losses.append(F.cross_entropy(lk.reshape(B * T, V), tokens[:, k + 1:k + 1 + T].reshape(-1)))

    balance = torch.stack(stats["balance"]).sum() if stats["balance"] else logits.new_zeros(())
    total = loss_main + cfg.aux_loss_alpha * balance
    if D > 0:
        total = total + (cfg.mtp_loss_lambda / D) * torch.stack(mtp_losses).sum()
    return {"logits": logits, "mtp_logits": mtp_logits, "loss_main": loss_main,
            "loss_mtp": mtp_losses, "loss_balance": balance, "loss_total": total,
            "expert_counts": stats["expert_counts"], "margins": stats["margins"]}


# -----------------------------------------------------------------------------
# Files


def dequantize_blocks(w, scale_inv, block=128):
    """FP8 weight [out, in] (already widened) times its per-128x128-block scale
    [ceil(out/128), ceil(in/128)] (the release's weight_scale_inv: w_real = w_fp8 * s)."""
    out_dim, in_dim = w.shape
    s = scale_inv.repeat_interleave(block, 0)[:out_dim].repeat_interleave(block, 1)[:, :in_dim]
    return w * s


def load_weights(path, cfg, dtype):
    """Reads every parameter of param_shapes(cfg) from a safetensors file, as `dtype`.
    F8_E4M3 tensors are dequantised with their `<name>_scale_inv` block scales."""
    shapes = param_shapes(cfg)
    stored, _, _ = safetensors_io.read_header(path)
    missing = [n for n in shapes if n not in stored]
    if missing:
        raise ValueError(f"{path}: {len(missing)} parameters missing, first: {missing[:3]}")
    fp8 = [n for n in shapes if stored[n].dtype == "F8_E4M3"]
    for n in fp8:
        if n + "_scale_inv" not in stored:
            raise ValueError(f"{path}: FP8 tensor '{n}' has no '{n}_scale_inv'")
    names = list(shapes) + [n + "_scale_inv" for n in fp8]
    arrays, _, _ = safetensors_io.load(path, names)   # extra tensors are ignored
    params = {}
    for name, shape in shapes.items():
        if tuple(arrays[name].shape) != tuple(shape):
            raise ValueError(f"{path}: '{name}' has shape {list(arrays[name].shape)}, "
                             f"config wants {list(shape)}")
        w = torch.from_numpy(arrays[name]).to(torch.float64)
        if name in fp8:
            w = dequantize_blocks(w, torch.from_numpy(arrays[name + "_scale_inv"]).to(torch.float64))
        params[name] = w.to(dtype)
    return params


def run_reference(cfg, params, tokens):
    """Forward + backward of loss.total. Returns (dict name -> tensor for the OUT file, margins)."""
    leaves = {n: (t.detach().clone().requires_grad_(not n.endswith("e_score_correction_bias")))
              for n, t in params.items()}
    r = forward(leaves, tokens, cfg)
    r["loss_total"].backward()
    out = {"logits": r["logits"].detach()}
    for k, lk in enumerate(r["mtp_logits"], start=1):
        out[f"mtp_logits.{k}"] = lk.detach()
    out["loss.main"] = r["loss_main"].detach().reshape(1)
    for k, lk in enumerate(r["loss_mtp"], start=1):
        out[f"loss.mtp.{k}"] = lk.detach().reshape(1)
    out["loss.balance"] = r["loss_balance"].detach().reshape(1)
    out["loss.total"] = r["loss_total"].detach().reshape(1)
    for name, t in leaves.items():
        if t.requires_grad:
            out["grad." + name] = t.grad if t.grad is not None else torch.zeros_like(t)
    for layer, c in sorted(r["expert_counts"].items()):
        out[f"expert_counts.{layer}"] = c.to(torch.float64)
    return out, r["margins"]


def train_sgd(cfg, params, tokens, steps, lr, gamma):
    """`steps` steps of plain SGD (p -= lr * grad of loss.total) on the same batch, each
    followed by the bias update b += gamma * sign(mean(c) - c) per MoE layer, c = that
    step's expert counts over the whole batch (sign(0) = 0, no re-centering).
    Returns dict: train.loss_total/main [steps] (before each update),
    train.expert_counts.<layer> [steps, E], train.bias.<layer> [E] after the last update."""
    p = {n: t.detach().clone() for n, t in params.items()}
    totals, mains, counts = [], [], {}
    for _ in range(steps):
        leaves = {n: t.requires_grad_(not n.endswith("e_score_correction_bias")) for n, t in p.items()}
        r = forward(leaves, tokens, cfg)
        r["loss_total"].backward()
        with torch.no_grad():
            for n, t in leaves.items():
                if t.requires_grad and t.grad is not None:
                    t -= lr * t.grad
                    t.grad = None
            for layer, c in r["expert_counts"].items():
                b = p[f"model.layers.{layer}.mlp.gate.e_score_correction_bias"]
                c = c.to(b.dtype)
                b += gamma * torch.sign(c.mean() - c)
                counts.setdefault(layer, []).append(c.to(torch.float64))
        totals.append(float(r["loss_total"]))
        mains.append(float(r["loss_main"]))
        p = {n: t.detach() for n, t in p.items()}
    out = {"train.loss_total": torch.tensor(totals, dtype=torch.float64),
           "train.loss_main": torch.tensor(mains, dtype=torch.float64)}
    for layer in sorted(counts):
        out[f"train.expert_counts.{layer}"] = torch.stack(counts[layer])
        out[f"train.bias.{layer}"] = p[f"model.layers.{layer}.mlp.gate.e_score_correction_bias"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--batch")
    ap.add_argument("--out")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--init-random", type=int, metavar="SEED")
    ap.add_argument("--write-weights")
    ap.add_argument("--weights-dtype", choices=["float64", "float32"], default="float32",
                    help="dtype of --write-weights matrices and norms (bias is always F32)")
    ap.add_argument("--write-batch")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--train-steps", type=int, default=0,
                    help="also run N SGD steps + bias updates; adds train.* tensors to --out")
    ap.add_argument("--lr", type=float, default=0.1, help="SGD learning rate for --train-steps")
    ap.add_argument("--gamma", type=float, default=1e-3, help="bias update rate for --train-steps")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)

    if args.init_random is not None:
        if not args.write_weights:
            ap.error("--init-random needs --write-weights")
        params = init_random(cfg, args.init_random)
        np_dtype = np.float32 if args.weights_dtype == "float32" else np.float64
        arrays = {n: t.numpy().astype(np.float32 if n.endswith("e_score_correction_bias") else np_dtype)
                  for n, t in params.items()}
        safetensors_io.save(args.write_weights, arrays, metadata={"seed": args.init_random})
        if args.write_batch:
            g = torch.Generator().manual_seed(args.init_random + 1)
            cols = args.seq_len + cfg.num_nextn_predict_layers + 1
            tokens = torch.randint(0, cfg.vocab_size, (args.batch_size, cols), generator=g)
            safetensors_io.save(args.write_batch, {"tokens": tokens.numpy()})
        return 0

    for flag in ("weights", "batch", "out"):
        if getattr(args, flag) is None:
            ap.error(f"--{flag} is required (or use --init-random)")
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    params = load_weights(args.weights, cfg, dtype)
    batch, _, _ = safetensors_io.load(args.batch, ["tokens"])
    tokens = torch.from_numpy(batch["tokens"].astype(np.int64))
    if tokens.dim() != 2 or tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        raise ValueError(f"{args.batch}: tokens must be [B, T+D+1] in [0, {cfg.vocab_size})")
    out, margins = run_reference(cfg, params, tokens)
    if args.train_steps > 0:
        out.update(train_sgd(cfg, params, tokens, args.train_steps, args.lr, args.gamma))
    safetensors_io.save(args.out, out,
                        metadata={"dtype": args.dtype, "routing_margins": json.dumps(margins)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
