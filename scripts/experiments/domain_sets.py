#!/usr/bin/env python3
"""Alternative four-domain corpora for the pipeline's robustness harness (issue 20), and the
table that compares pipeline runs on them.

  domain_sets.py build [--out data/domain_sets]   writes OUT/<set>/<domain>.txt
  domain_sets.py table RUN_DIR...                  one markdown table per run's results.json

Every corpus comes from installed Debian packages, files in sorted order, so a machine with the
same packages gets the same bytes. Where a source holds far more than the pipeline keeps
(max_domain_bytes, 2.5 MB), every k-th file is taken so the corpus spans the whole source
instead of its first letters. Python is used here only as a scripting language for an
experiment; neither the library nor the binary needs it.
"""
import argparse
import glob
import gzip
import json
import os
import sys

TARGET_BYTES = 3_000_000  # a little above the recipe's max_domain_bytes (2.5 MB)


def read_text(path):
    data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    return data.decode("utf-8", errors="replace")


def files(pattern, skip_links=True):
    out = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    return [p for p in out if not (skip_links and os.path.islink(p))]


def spread(paths, header):
    """Concatenates every k-th file (k chosen so the result is about TARGET_BYTES), each after
    a header line naming it; k = 1 when the whole source is smaller."""
    sizes = [os.path.getsize(p) * (4 if p.endswith(".gz") else 1) for p in paths]  # gzip's ratio on text, roughly
    step = max(1, sum(sizes) // TARGET_BYTES)
    parts = []
    for p in paths[::step]:
        parts.append(header.format(path=p) + "\n" + read_text(p))
    return "".join(parts)


# set → domain → (files, header format). Each domain names the Debian package it needs.
SETS = {
    # Documentation of the system itself: roff markup, Perl code with POD, packaging prose, legal text.
    "sysdocs": {
        "man": (lambda: files("/usr/share/man/man[158]/*.gz"), '.\\" {path}', "man pages (English, sections 1, 5, 8)"),
        "perl": (lambda: files("/usr/share/perl/5.*/**/*.pm"), "# {path}", "perl-modules-5.36"),
        "changelog": (lambda: files("/usr/share/doc/*/changelog.Debian.gz"), "== {path}", "changelog.Debian of every installed package"),
        "copyright": (lambda: files("/usr/share/doc/*/copyright"), "== {path}", "copyright of every installed package"),
    },
    # Two natural languages besides English (same markup), and two small languages of code:
    # domains that differ in size (Tcl is a third of the others) and in difficulty.
    "langs": {
        "de": (lambda: files("/usr/share/man/de/**/*.gz"), '.\\" {path}', "German man pages (man-db, dpkg, ...)"),
        "fr": (lambda: files("/usr/share/man/fr/**/*.gz"), '.\\" {path}', "French man pages (man-db, dpkg, ...)"),
        "tcl": (lambda: files("/usr/share/tcltk/**/*.tcl"), "# {path}", "tcl8.6, tk8.6"),
        "cmake": (lambda: files("/usr/share/cmake-3.*/Modules/**/*.cmake"), "# {path}", "cmake-data"),
    },
}


def build(out):
    for name, domains in SETS.items():
        os.makedirs(os.path.join(out, name), exist_ok=True)
        for domain, (find, header, package) in domains.items():
            paths = find()
            if not paths:
                sys.exit(f"error: {name}/{domain}: no files found; install {package}")
            text = spread(paths, header)
            if len(text) < 500_000:
                sys.exit(f"error: {name}/{domain}: only {len(text)} bytes from {len(paths)} files; install {package}")
            dst = os.path.join(out, name, domain + ".txt")
            with open(dst + ".tmp", "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(dst + ".tmp", dst)
            print(f"{dst}: {os.path.getsize(dst)} bytes from {len(paths)} files")


def table(runs):
    """Per run: perplexity per domain of base, instruct, experts and MoE after MiX, the MoE's ratio
    to the best expert, the students, and the own-expert routing shares."""
    for run in runs:
        r = json.load(open(os.path.join(run, "results.json")))
        comp = r["composition"]
        domains = [d for d in comp if d != "mixed"]
        print(f"\n### {run}\n")
        print("| model | " + " | ".join(domains) + " | mixed |")
        print("|---|" + "---|" * (len(domains) + 1))
        labels = ["base", "instruct"] + [f"expert {d}" for d in domains] + ["MoE after MiX", "student (distilled)", "student (no distillation)"]
        for label in labels:
            if label in r:
                print(f"| {label} | " + " | ".join(f"{r[label][d]:.1f}" for d in domains + ["mixed"]) + " |")
        print("| MoE / best expert | " + " | ".join(f"{comp[d]['moe_over_best']:.3f}" for d in domains + ["mixed"]) + " |")
        own = r.get("routing_own_share", {})
        if own:
            print("| own-expert share per layer | " + " | ".join("/".join(f"{v:.2f}" for v in own[d]) for d in domains) + " | |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", default="data/domain_sets")
    t = sub.add_parser("table")
    t.add_argument("runs", nargs="+")
    a = ap.parse_args()
    build(a.out) if a.cmd == "build" else table(a.runs)


if __name__ == "__main__":
    main()
