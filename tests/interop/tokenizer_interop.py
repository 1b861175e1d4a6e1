#!/usr/bin/env python3
"""Optional interop test: smelt's tokenizers against Hugging Face `tokenizers` on more text than
the committed fixture covers. Skips (exit 77) when `tokenizers` is not installed.

  python3 tests/interop/tokenizer_interop.py build/smelt [TEXT_FILE...]

Both directions: a tokenizer trained by smelt is encoded by HF, one trained by HF is encoded by
smelt; the ids must be equal on every file given (default: the fixture corpus).
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
except ImportError:
    print("SKIP: python package 'tokenizers' is not installed")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))


def smelt_ids(smelt, tokenizer, path):
    out = subprocess.check_output([smelt, "tokenizer", "encode", "--tokenizer", tokenizer, "--file", path])
    return json.loads(out)


def main():
    smelt = sys.argv[1]
    files = sys.argv[2:] or [os.path.join(HERE, "..", "fixtures", "tokenizer_corpus.txt")]
    with tempfile.TemporaryDirectory() as tmp:
        ours = os.path.join(tmp, "smelt.json")
        subprocess.run([smelt, "tokenizer", "train", "--data", *files, "--vocab-size", "2000", "--out", ours, "--json"],
                       check=True, stdout=subprocess.DEVNULL)
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        hf.train(files, trainers.BpeTrainer(vocab_size=2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                            special_tokens=["<|bos|>", "<|eos|>"], show_progress=False))
        theirs = os.path.join(tmp, "hf.json")
        hf.save(theirs)
        ours_in_hf = Tokenizer.from_file(ours)
        failures = 0
        for path in files:
            text = open(path, encoding="utf-8", newline="").read()  # keep \r\n as it is on disk
            for name, tok_path, hf_tok in (("smelt-trained", ours, ours_in_hf), ("hf-trained", theirs, hf)):
                want = hf_tok.encode(text, add_special_tokens=False).ids
                got = smelt_ids(smelt, tok_path, path)
                same = want == got
                print(f"{path}: {name}: {len(want)} tokens, {'same ids' if same else 'DIFFERENT ids'}")
                failures += not same
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
