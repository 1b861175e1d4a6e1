#!/usr/bin/env python3
"""Optional interop test on the real test model, SmolLM2-135M-Instruct (GGUF, Q4_1 with Q8_0
embeddings; scripts/fetch_smollm2.sh fetches it into .cache/models/). Skips (exit 77) when the
file, torch, transformers or tokenizers is missing.

1. `smelt import` of the GGUF, and smelt's logits on a few hundred tokens of text against
   transformers loading the same GGUF (its own dequantiser): ≤ 1e-4 relative to the largest logit.
2. The imported tokenizer.json loaded by HF `tokenizers` gives smelt's ids on texts in many
   scripts, emoji, digits and white space (the SmolLM pre-tokenizer: digits split, then GPT-2's).
   Sparse upcycling (8 experts, top-2) reproduces the imported model's logits (1e-5).
3. `smelt generate --chat` answers "What is the capital of France?" with Paris (greedy).

  python3 tests/interop/smollm2_interop.py build/smelt [path/to/SmolLM2.gguf]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GGUF = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
if not os.path.exists(GGUF):
    print(f"SKIP: {GGUF} is absent (scripts/fetch_smollm2.sh fetches it)")
    sys.exit(77)
try:
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
except ImportError:
    print("SKIP: torch / transformers / tokenizers / safetensors are not installed")
    sys.exit(77)

TEXTS = [
    "Hello, world! It's 2026: they're here, we've won, I'll go, she'd say 'LL l'amour.",
    "Größe über Äpfel — ça été. Съешь ещё булок. 東京は日本の首都です。北京是中国的首都。",
    "العربية ٣٤٥ · हिन्दी · 한국어 · Ωμέγα ≈ √∑∞ · 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 Ⅻ ½ ² ³ ３４５",
    "Emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇩🇪 ❤️✨ control \x04 bytes \x01\x7f",
    "\t\ttabs   and    spaces\r\n\r\n\n\n   indented line\u00a0nbsp\u3000ideo\u2009thin\n",
    "numbers 1234567 3.14159 0x1F 1e-9 ... !!! ??? <<>> ### $$$ @user #tag",
    "    def f(self, x):\n        return x ** 2  # comment\n",
]


def smelt_ids(smelt, tokenizer, text):
    out = subprocess.run([smelt, "tokenizer", "encode", "--tokenizer", tokenizer, "--file", "-", "--json"], input=text.encode(),
                         check=True, capture_output=True)
    return json.loads(out.stdout)["ids"]


def main():
    smelt = sys.argv[1]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "smollm2")
        subprocess.run([smelt, "import", "--model", GGUF, "--out", model], check=True, stdout=subprocess.DEVNULL)

        # 1. Logits against transformers' reading of the same file.
        text = os.path.join(ROOT, "tests", "fixtures", "tokenizer_corpus.txt")
        logits_file = os.path.join(tmp, "logits.safetensors")
        subprocess.run([smelt, "eval", "--model", model, "--data", text, "--seq-len", "300", "--batch-size", "1",
                        "--max-batches", "1", "--save-logits", logits_file], check=True, capture_output=True)
        ref = load_file(logits_file)
        shutil.copy(GGUF, os.path.join(tmp, "m.gguf"))
        hf = AutoModelForCausalLM.from_pretrained(tmp, gguf_file="m.gguf", dtype=torch.float32).eval()
        with torch.no_grad():
            theirs = hf(ref["input_ids"], use_cache=False).logits
        rel = ((theirs - ref["logits"]).abs().max() / theirs.abs().max()).item()
        print(f"logits: {ref['input_ids'].shape[1]} tokens, max |Δ| / max |logit| = {rel:.2e} (transformers from the same GGUF)")
        if rel > 1e-4:
            print("FAIL: logits differ from transformers'")
            failures += 1

        # 1b. Sparse upcycling reproduces the dense model (8 copies of each FFN, top-2 renormalised).
        upcycled, up_logits = os.path.join(tmp, "upcycled"), os.path.join(tmp, "up_logits.safetensors")
        subprocess.run([smelt, "upcycle", "--model", model, "--out", upcycled, "--experts", "8", "--top-k", "2"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([smelt, "eval", "--model", upcycled, "--data", text, "--seq-len", "300", "--batch-size", "1",
                        "--max-batches", "1", "--save-logits", up_logits], check=True, capture_output=True)
        up = load_file(up_logits)["logits"]
        up_rel = ((up - ref["logits"]).abs().max() / ref["logits"].abs().max()).item()
        print(f"upcycled to 8 experts, top-2: max |Δ| / max |logit| = {up_rel:.2e} from the dense model")
        if up_rel > 1e-5:
            print("FAIL: upcycling changed the logits")
            failures += 1

        # 2. Token ids against HF tokenizers on the imported tokenizer.json.
        hf_tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
        for k, t in enumerate(TEXTS):
            ours, want = smelt_ids(smelt, os.path.join(model, "tokenizer.json"), t), hf_tok.encode(t, add_special_tokens=False).ids
            if ours != want:
                print(f"FAIL: text {k}: smelt {ours[:20]}... HF {want[:20]}...")
                failures += 1
        print(f"tokenizer: {len(TEXTS)} texts, smelt's ids {'equal' if failures == 0 else 'differ from'} HF tokenizers'")

        # 3. A chat answer.
        answer = subprocess.run([smelt, "generate", "--model", model, "--chat", "--prompt", "What is the capital of France?",
                                 "--temperature", "0", "--max-new-tokens", "30"], check=True, capture_output=True, text=True).stdout
        print(f"chat: {answer.strip()!r}")
        if "Paris" not in answer:
            print("FAIL: the answer does not name Paris")
            failures += 1
    print("smollm2 interop:", "ok" if failures == 0 else f"{failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
