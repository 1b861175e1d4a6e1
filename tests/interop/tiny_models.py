"""What the interop tests share: a 400-token BPE tokenizer and prepared data from the tokenizer
fixture corpus, and tiny models trained by smelt on them from a recipe."""
import json
import os
import subprocess

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizer_corpus.txt")


def run(*args):
    """Runs a command, failing on a non-zero exit; its output (any bytes) as text."""
    return subprocess.run(args, check=True, capture_output=True, text=True, errors="surrogateescape").stdout


def tokenizer_and_data(smelt, tmp):
    """(tokenizer.json path, prepared data directory) in tmp."""
    tok = os.path.join(tmp, "tok.json")
    run(smelt, "tokenizer", "train", "--data", CORPUS, "--vocab-size", "400", "--out", tok, "--json")
    data = os.path.join(tmp, "data")
    run(smelt, "data", "prepare", "--data", CORPUS, "--tokenizer", tok, "--out", data, "--json")
    return tok, data


def train_tiny(smelt, tmp, name, model, train, data):
    """Trains `model` (config fields) with `train` (recipe fields) on data; the model directory."""
    recipe = os.path.join(tmp, name + ".json")
    with open(recipe, "w") as f:
        json.dump({"model": model, "train": train}, f)
    out = os.path.join(tmp, name + "_model")
    run(smelt, "train", "--config", recipe, "--data", data, "--out", out)
    return out
