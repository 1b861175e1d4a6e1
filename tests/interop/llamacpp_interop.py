#!/usr/bin/env python3
"""Optional interop test: `smelt export --format gguf` loads in llama.cpp (built from the
llama-cpp-python sdist by scripts/build_llamacpp.sh into .cache/llama.cpp/) and computes what
smelt computes. Skips (exit 77) when that build, numpy or safetensors is missing.

For smelt's own dense (Llama), MoE (Mixtral layout), Qwen2 (q, k, v biases) and Qwen2-MoE models, trained here for a few steps with
a BPE tokenizer, and for SmolLM2-135M-Instruct imported from its GGUF when
.cache/models/ has it (scripts/fetch_smollm2.sh):
1. the F32 export's logits in llama.cpp (f32 KV cache) equal smelt's to 1e-4 of the largest;
2. the Q8_0 export's stay within the quantisation error (≤ 5% of the largest logit, the same
   top token at ≥ 90% of positions);
3. llama.cpp's greedy tokens from a prompt are smelt's (`smelt generate --temperature 0`).

  python3 tests/interop/llamacpp_interop.py build/smelt
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LLAMA = os.path.join(ROOT, ".cache", "llama.cpp")
LIB = os.path.join(LLAMA, "build", "bin")
SMOLLM2 = os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
if not os.path.exists(os.path.join(LIB, "libllama.so")):
    print(f"SKIP: llama.cpp is not built in {LLAMA} (scripts/build_llamacpp.sh builds it)")
    sys.exit(77)
os.environ["LLAMA_CPP_LIB_PATH"] = LIB
sys.path.insert(0, os.path.join(LLAMA, "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_models import CORPUS, run, tokenizer_and_data, train_tiny  # noqa: E402

try:
    import numpy as np
    from safetensors.numpy import load_file
    import llama_cpp
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

BASE = {"vocab_size": 400, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 128}
MODELS = {"dense": {}, "moe": {"num_local_experts": 4, "num_experts_per_tok": 2},
          # Biased q, k, v (llama.cpp's qwen2), and Qwen2-MoE's gated shared expert (its qwen2moe).
          "qwen2": {"qkv_bias": True},
          "qwen2moe": {"qkv_bias": True, "num_local_experts": 4, "num_experts_per_tok": 2, "shared_expert_intermediate_size": 64,
                       "shared_expert_gate": True, "norm_topk_prob": False}}
F32_KV = dict(type_k=0, type_v=0)  # GGML_TYPE_F32: llama.cpp's default f16 cache would round the keys and values


def llama_logits(path, ids):
    llm = llama_cpp.Llama(model_path=path, n_ctx=max(256, len(ids) + 8), n_threads=2, logits_all=True, verbose=False, **F32_KV)
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)])


def llama_greedy(path, ids, n, stop):
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True, verbose=False, **F32_KV)
    llm.eval(ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if nxt == stop:
            break
        out.append(nxt)
        llm.eval([nxt])
    return out


def check_model(smelt, name, model, tokenizer, tmp, prompt, stop_token):
    failures = 0
    logits_file = os.path.join(tmp, name + "_logits.safetensors")
    run(smelt, "eval", "--model", model, "--data", CORPUS, "--seq-len", "96", "--batch-size", "1", "--max-batches", "1",
        "--save-logits", logits_file)
    ref = load_file(logits_file)
    ids, want = ref["input_ids"][0].tolist(), ref["logits"][0]
    for kind in ("f32", "q8_0"):
        gguf = os.path.join(tmp, f"{name}_{kind}.gguf")
        run(smelt, "export", "--model", model, "--format", "gguf", "--type", kind, "--out", gguf)
        got = llama_logits(gguf, ids)
        rel = float(np.abs(got - want).max() / np.abs(want).max())
        agree = float((got.argmax(-1) == want.argmax(-1)).mean())
        limit = 1e-4 if kind == "f32" else 0.05
        ok = rel <= limit and (kind == "f32" or agree >= 0.9)
        print(f"{name} {kind}: max |Δlogit| / max |logit| = {rel:.2e}, same top token at {agree:.0%} of {len(ids)} positions"
              f"{'' if ok else '  FAIL'}")
        failures += not ok
    # Greedy decoding from the same prompt ids.
    prompt_ids = json.loads(run(smelt, "tokenizer", "encode", "--tokenizer", tokenizer, "--text", prompt, "--json"))["ids"]
    theirs = llama_greedy(os.path.join(tmp, f"{name}_f32.gguf"), prompt_ids, 24, stop_token)
    their_text = run(smelt, "tokenizer", "decode", "--tokenizer", tokenizer, "--ids", ",".join(map(str, theirs))) if theirs else ""
    ours = run(smelt, "generate", "--model", model, "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "24")
    same = ours == prompt + their_text
    print(f"{name} greedy: {'same' if same else 'DIFFERENT'} text {ours[len(prompt):][:60]!r}"
          f"{'' if same else ' (llama.cpp: ' + repr(their_text[:60]) + ')'}")
    return failures + (not same)


def main():
    smelt = sys.argv[1]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        tok, data = tokenizer_and_data(smelt, tmp)
        eos = json.loads(run(smelt, "tokenizer", "encode", "--tokenizer", tok, "--text", "<|eos|>", "--special", "--json"))["ids"][0]
        for name, extra in MODELS.items():
            model = train_tiny(smelt, tmp, name, {**BASE, **extra},
                               {"steps": 30, "batch_size": 4, "seq_len": 64, "lr": 0.01, "warmup_steps": 2, "eval_batches": 1}, data)
            failures += check_model(smelt, name, model, os.path.join(model, "tokenizer.json"), tmp, "The ", eos)
        if os.path.exists(SMOLLM2):
            model = os.path.join(tmp, "smollm2")
            run(smelt, "import", "--model", SMOLLM2, "--out", model)
            failures += check_model(smelt, "smollm2", model, os.path.join(model, "tokenizer.json"), tmp,
                                    "The capital of France is", 0)
        else:
            print(f"(SmolLM2 skipped: {SMOLLM2} is absent)")
    print("llama.cpp interop:", "ok" if failures == 0 else f"{failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
