#!/usr/bin/env python3
"""Optional interop test: models trained by smelt, exported with `smelt export --format hf`, load
in Hugging Face transformers as they are and give smelt's logits (to 1e-4). Skips (exit 77)
when torch or transformers is not installed.

  python3 tests/interop/hf_export_interop.py build/smelt
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
except ImportError:
    print("SKIP: torch / transformers / safetensors are not installed")
    sys.exit(77)

from tiny_models import CORPUS, run, tokenizer_and_data, train_tiny

BASE = {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 64}
ARCHS = {
    "llama": {},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {"num_local_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 24,
                  "shared_expert_intermediate_size": 40, "shared_expert_gate": True, "decoder_sparse_step": 2,
                  "norm_topk_prob": False},
}


def main():
    smelt = sys.argv[1]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        tok, data = tokenizer_and_data(smelt, tmp)
        for arch, extra in ARCHS.items():
            model = train_tiny(smelt, tmp, arch, {**BASE, **extra},
                               {"steps": 5, "batch_size": 2, "seq_len": 16, "lr": 0.01, "warmup_steps": 1, "eval_batches": 1}, data)
            hf_dir, logits_file = (os.path.join(tmp, arch + s) for s in ("_hf", "_logits.safetensors"))
            run(smelt, "eval", "--model", model, "--data", data, "--max-batches", "1", "--batch-size", "2",
                "--save-logits", logits_file)
            run(smelt, "export", "--model", model, "--out", hf_dir)
            ref = load_file(logits_file)
            hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
            with torch.no_grad():
                got = hf(ref["input_ids"], use_cache=False).logits
            err = ((got - ref["logits"]).abs() / (1 + ref["logits"].abs())).max().item()
            ok = err < 1e-4
            print(f"{arch}: {type(hf).__name__} max relative logit error {err:.2e} {'ok' if ok else 'FAIL'}")
            failures += not ok
        # The exported tokenizer loads in transformers and gives smelt's ids.
        hf_tok = PreTrainedTokenizerFast.from_pretrained(os.path.join(tmp, "llama_hf"))
        text = open(CORPUS, encoding="utf-8", newline="").read()[:5000]
        sample = os.path.join(tmp, "sample.txt")
        with open(sample, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        ours = json.loads(subprocess.check_output([smelt, "tokenizer", "encode", "--tokenizer", tok, "--file", sample]))
        same = hf_tok(text, add_special_tokens=False)["input_ids"] == ours
        print(f"tokenizer: PreTrainedTokenizerFast {'same ids' if same else 'DIFFERENT ids'}")
        failures += not same
        chat = hf_tok.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
                                          tokenize=True)
        if hasattr(chat, "keys"):  # newer transformers return a BatchEncoding
            chat = chat["input_ids"]
        special = {t: hf_tok.convert_tokens_to_ids(t) for t in ("<|user|>", "<|assistant|>", "<|end|>", "<|eos|>")}
        want = [special["<|user|>"]] + hf_tok("Hi", add_special_tokens=False)["input_ids"] + [special["<|end|>"], special["<|assistant|>"]] \
            + hf_tok("Hello.", add_special_tokens=False)["input_ids"] + [special["<|end|>"], special["<|eos|>"]]
        ok = list(chat) == want
        print(f"chat template: {'same tokens as smelt' if ok else 'DIFFERENT: ' + str(list(chat)) + ' vs ' + str(want)}")
        failures += not ok
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
