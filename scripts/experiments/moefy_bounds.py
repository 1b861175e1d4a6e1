#!/usr/bin/env python3
"""How far can MoEfication of SmolLM2-135M go without retraining? (issue 18, criterion 3)

`smelt moefy` splits each SwiGLU FFN into experts and fits routers; its best 8-expert result
costs +42 % perplexity at 12.5 % fewer active FFN parameters, far from LaDiMo's "20 % fewer at
<= 2 %". This script asks whether a better router could close the gap, by replacing the router
with an ORACLE: every expert is computed, and each token keeps the k experts whose true output
has the largest norm (no router can choose better by that measure). It also bounds
neuron-level schemes: keeping each token's largest neuron contributions |h_i| * ||W_down[:, i]||
(needs the whole gate and up projections, so it saves only down-projection work), and
CATS-style selection by |silu(gate_i)| alone (saves up and down for the dropped neurons).
Retraining is bounded from one side too: under the oracle's routing, each layer's down
projection is refitted by least squares (ridge) to reproduce the dense FFN's output on the
calibration tokens -- the best any layer-wise fit of that matrix can do on them.

The model is an independent PyTorch implementation of the Llama forward, reading the weights
smelt imported (`smelt import --model SmolLM2.gguf --out DIR`; bench/decode_vs_llamacpp.sh
leaves one in .cache/bench_decode/smollm2). Calibration: the first 110 KB of each default Debian
domain (16 windows of 256 tokens per domain: 16,384 tokens for the least-squares refit, every
8th for the neuron statistics); validation: 16 windows of 256
tokens spread over the last 125 KB of each domain. Python and PyTorch are used only as an
experiment's independent oracle; neither the library nor the binary needs them.

  python3 scripts/experiments/moefy_bounds.py [--model DIR] [--data data/domains] [--json]

Needs: pip install torch safetensors tokenizers numpy. About 15 minutes on 2 cores.
"""
import argparse
import json
import math

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

DOMAINS = ["c", "glosses", "prose", "python"]


class Llama:
    """The Llama forward (GQA, rotate-half RoPE, RMSNorm, SwiGLU, tied embeddings) in PyTorch;
    `ffn(layer, x)` replaces each layer's FFN so that its sparse variants can be scored."""

    def __init__(self, model_dir):
        cfg = json.load(open(f"{model_dir}/config.json"))
        self.w = load_file(f"{model_dir}/model.safetensors")
        self.layers = cfg["num_hidden_layers"]
        self.heads, self.kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.head_dim = cfg["hidden_size"] // self.heads
        self.eps, self.theta = cfg["rms_norm_eps"], cfg["rope_theta"]
        self.tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")

    def p(self, layer, name):
        return self.w[f"model.layers.{layer}.{name}.weight"]

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, T):
        d = self.head_dim
        inv = 1.0 / (self.theta ** (torch.arange(0, d, 2).float() / d))
        f = torch.outer(torch.arange(T).float(), inv)
        cos, sin = torch.cat([f.cos()] * 2, -1), torch.cat([f.sin()] * 2, -1)
        return x * cos + torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1) * sin

    def activations(self, layer, x):  # h = silu(x Wg) * (x Wu), one column per neuron
        return torch.nn.functional.silu(x @ self.p(layer, "mlp.gate_proj").T) * (x @ self.p(layer, "mlp.up_proj").T)

    def dense_ffn(self, layer, x):
        return self.activations(layer, x) @ self.p(layer, "mlp.down_proj").T

    @torch.no_grad()
    def forward(self, ids, ffn=None, capture=None):
        ffn = ffn or self.dense_ffn
        B, T = ids.shape
        H, KV, d = self.heads, self.kv_heads, self.head_dim
        h = self.w["model.embed_tokens.weight"][ids]
        mask = torch.full((T, T), float("-inf")).triu(1)
        for l in range(self.layers):
            x = self.rms(h, self.p(l, "input_layernorm"))
            q = self.rope((x @ self.p(l, "self_attn.q_proj").T).view(B, T, H, d).transpose(1, 2), T)
            k = self.rope((x @ self.p(l, "self_attn.k_proj").T).view(B, T, KV, d).transpose(1, 2), T)
            v = (x @ self.p(l, "self_attn.v_proj").T).view(B, T, KV, d).transpose(1, 2)
            k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, -1) @ v
            h = h + a.transpose(1, 2).reshape(B, T, H * d) @ self.p(l, "self_attn.o_proj").T
            x = self.rms(h, self.p(l, "post_attention_layernorm"))
            if capture:
                capture(l, x)
            h = h + ffn(l, x)
        return self.rms(h, self.w["model.norm.weight"]) @ self.w["model.embed_tokens.weight"].T

    def windows(self, text, n, T=256):  # n windows spread evenly over the text
        ids = self.tok.encode(text).ids
        step = max(T, (len(ids) - T) // n)
        return torch.tensor([ids[i : i + T] for i in range(0, len(ids) - T + 1, step)][:n])

    def perplexity(self, ids, ffn=None, batch=8):
        total, n = 0.0, 0
        for i in range(0, len(ids), batch):
            b = ids[i : i + batch]
            logits = self.forward(b, ffn)
            total += torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), b[:, 1:].reshape(-1), reduction="sum").item()
            n += b[:, 1:].numel()
        return math.exp(total / n)


def balanced_kmeans(features, experts, iters=15, seed=0):
    """Equal-size groups of rows: each round assigns (row, centre) pairs nearest first while
    the centre has room, then moves each centre to its rows' mean."""
    n = features.size(0)
    room = n // experts
    centres = features[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:experts]].clone()
    for _ in range(iters):
        order = torch.argsort(torch.cdist(features, centres).flatten()).tolist()
        assign = torch.full((n,), -1, dtype=torch.long)
        count = [0] * experts
        for idx in order:
            row, e = divmod(idx, experts)
            if assign[row] < 0 and count[e] < room:
                assign[row] = e
                count[e] += 1
        for e in range(experts):
            centres[e] = features[assign == e].mean(0)
    return assign


def oracle_mask(m, l, h, groups, experts, k):
    """Per token and neuron, 1 where the neuron's expert is among the k whose outputs have the
    largest norms."""
    down = m.p(l, "mlp.down_proj")
    outs = torch.stack([h[..., groups[l] == e] @ down[:, groups[l] == e].T for e in range(experts)], -2)
    top = outs.norm(dim=-1).topk(k, -1).indices
    chosen = torch.zeros(outs.shape[:-1]).scatter_(-1, top, 1.0)
    member = (groups[l].unsqueeze(1) == torch.arange(experts)).float()  # neurons x experts (shared neurons: none)
    return chosen @ member.T


def oracle_top_k(m, groups, experts, k, shared=None, downs=None):
    """Each token keeps the k experts whose outputs have the largest norms (plus any shared
    neurons, always on); `downs` replaces the layers' down projections."""
    def ffn(l, x):
        h, down = m.activations(l, x), m.p(l, "mlp.down_proj") if downs is None else downs[l]
        keep = oracle_mask(m, l, h, groups, experts, k)
        if shared is not None:
            keep = keep + shared[l].float()
        return (h * keep) @ down.T
    return ffn


def refit_downs(m, inputs, groups, experts, k):
    """Each layer's down projection refitted by ridge least squares so that the oracle's top-k
    neurons reproduce the dense FFN's output on the calibration tokens."""
    downs = []
    for l in range(m.layers):
        h = m.activations(l, inputs[l])
        kept = h * oracle_mask(m, l, h, groups, experts, k)
        gram = kept.T @ kept
        ridge = 1e-3 * gram.diagonal().mean() * torch.eye(gram.size(0))
        downs.append(torch.linalg.solve(gram + ridge, kept.T @ (h @ m.p(l, "mlp.down_proj").T)).T.contiguous())
    return downs


def neuron_oracle(m, keep):
    def ffn(l, x):
        h, down = m.activations(l, x), m.p(l, "mlp.down_proj")
        score = h.abs() * down.norm(dim=0)
        threshold = score.topk(int(keep * h.size(-1)), -1).values[..., -1:]
        return (h * (score >= threshold)) @ down.T
    return ffn


def gate_only(m, keep):  # CATS: the neurons with the largest |silu(gate)|, chosen before up is computed
    def ffn(l, x):
        g = torch.nn.functional.silu(x @ m.p(l, "mlp.gate_proj").T)
        threshold = g.abs().topk(int(keep * g.size(-1)), -1).values[..., -1:]
        return (g * (x @ m.p(l, "mlp.up_proj").T) * (g.abs() >= threshold)) @ m.p(l, "mlp.down_proj").T
    return ffn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=".cache/bench_decode/smollm2")
    ap.add_argument("--data", default="data/domains")
    ap.add_argument("--json", action="store_true", help="one JSON line per row instead of a markdown table")
    args = ap.parse_args()
    torch.set_num_threads(2)
    m = Llama(args.model)
    calib, val = [], []
    for d in DOMAINS:
        raw = open(f"{args.data}/{d}.txt", "rb").read()
        calib.append(m.windows(raw[:110_000].decode("utf-8", "ignore"), 16))
        val.append(m.windows(raw[-125_000:].decode("utf-8", "ignore"), 16))
    calib, val = torch.cat(calib), torch.cat(val)
    inputs = [[] for _ in range(m.layers)]  # each layer's FFN inputs on the calibration windows
    for i in range(0, len(calib), 8):
        m.forward(calib[i : i + 8], capture=lambda l, x: inputs[l].append(x.reshape(-1, x.size(-1))))
    inputs = [torch.cat(x) for x in inputs]

    def contributions(l):  # tokens x neurons: |h_i| * ||W_down[:, i]||, on every 8th calibration token
        return m.activations(l, inputs[l][::8]).abs() * m.p(l, "mlp.down_proj").norm(dim=0)

    def coact_groups(experts):  # smelt's --split coact: neurons whose |activation| profiles align
        out = []
        for l in range(m.layers):
            f = contributions(l).T
            out.append(balanced_kmeans(f / f.norm(dim=1, keepdim=True).clamp_min(1e-9), experts))
        return out

    def shared_and_routed(shared_neurons, experts):  # the most active neurons always on, the rest clustered
        shared, groups = [], []
        for l in range(m.layers):
            c = contributions(l)
            mask = torch.zeros(c.size(1), dtype=torch.bool)
            mask[torch.argsort(c.mean(0), descending=True)[:shared_neurons]] = True
            f = c[:, ~mask].T
            g = torch.full((c.size(1),), -1, dtype=torch.long)
            g[~mask] = balanced_kmeans(f / f.norm(dim=1, keepdim=True).clamp_min(1e-9), experts)
            shared.append(mask)
            groups.append(g)
        return shared, groups

    dense = m.perplexity(val)
    rows = [("dense", "1.000", dense)]
    n = m.p(0, "mlp.gate_proj").size(0)
    for keep in (0.875, 0.75, 0.6):  # gate and up always run: only down's share is saved
        rows.append((f"neuron oracle, keep {keep}", f"{(2 + keep) / 3:.3f}", m.perplexity(val, neuron_oracle(m, keep))))
    rows.append(("gate-only (CATS), keep 0.7", f"{(1 + 2 * 0.7) / 3:.3f}", m.perplexity(val, gate_only(m, 0.7))))
    for experts, ks in ((8, (7, 6)), (32, (28,))):
        groups = coact_groups(experts)
        for k in ks:
            rows.append((f"expert oracle, coact, top-{k} of {experts}", f"{k / experts:.3f}",
                         m.perplexity(val, oracle_top_k(m, groups, experts, k))))
        if experts == 8:
            downs = refit_downs(m, inputs, groups, 8, 7)
            rows.append(("expert oracle, coact, top-7 of 8, down projections refitted", "0.875",
                         m.perplexity(val, oracle_top_k(m, groups, 8, 7, downs=downs))))
    shared, groups = shared_and_routed(n // 4, 24)
    share = (n // 4 + 18 * (n - n // 4) // 24) / n
    rows.append((f"expert oracle, {n // 4} shared + top-18 of 24", f"{share:.3f}",
                 m.perplexity(val, oracle_top_k(m, groups, 24, 18, shared))))

    if args.json:
        for name, active, p in rows:
            print(json.dumps({"scheme": name, "active_ffn_share": float(active), "perplexity": round(p, 3),
                              "vs_dense": round(p / dense - 1, 4)}))
        return
    print("| scheme | active FFN parameters | perplexity | vs dense |\n|---|---|---|---|")
    for name, active, p in rows:
        print(f"| {name} | {active} | {p:.2f} | {100 * (p / dense - 1):+.1f} % |")


if __name__ == "__main__":
    main()
