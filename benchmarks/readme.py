"""The numbers in README.md and docs/ptb.md, generated from the committed results so they cannot drift.

    .venv/bin/python benchmarks/readme.py          # rewrite the generated sections
    .venv/bin/python benchmarks/readme.py --check  # exit 1 if a document is stale (a test runs this)

A generated section sits between ``<!-- results: NAME -->`` and
``<!-- /results -->`` and is made by ``SECTIONS[NAME]`` from the files in
benchmarks/results/ (``graphrnn bench``, ``graphrnn bench --lm``,
``benchmarks/ptb_vs_book.py``, ``benchmarks/classic.py``) and docs/ptb/ch6/
(the report ``graphrnn sweep`` wrote). To change a number, rerun what
measures it, then this script.
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
DOCUMENTS = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "ptb.md")]
REPORT = os.path.join(ROOT, "docs", "ptb", "ch6", "report.md")
BOOK_CH6 = {  # the book's code on these machines (issue 10): validation per epoch, test
    ("lstm", 0): ([202.8, 160.1, 142.6, 138.7], 134.2), ("lstm", 1): (None, 135.6),
    ("gru", 0): ([219.0, 170.8, 154.1, 153.2], 148.9), ("gru", 1): (None, 149.5),
}
MARK = re.compile(r"(<!-- results: (\w[\w-]*) -->\n)(.*?)(<!-- /results -->)", re.S)


def _load(name):
    with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
        return json.load(f)


def _median(rows, size, cell, impl):
    for r in rows:
        if (r["size"], r["cell"], r["impl"]) == (size, cell, impl):
            return r["median_s"]
    return None


def cells_section():
    res = _load("bench.json")
    m, rows = res["meta"], res["rows"]
    lines = ["| goal | measured ratio | met |", "|---|---:|:---:|"]
    lines += [f"| {g['goal']} | {g['ratio']:.2f}x | {'yes' if g['met'] else 'NO'} |" for g in res["goals"]]
    hoisted = []
    for cell in ("gru", "lstm"):
        pair = [(_median(rows, s, cell, "hoisted"), _median(rows, s, cell, "graphrnn")) for s in ("small", "medium")]
        if all(a and b for a, b in pair):
            hoisted.append(f"{cell} {pair[0][0] / pair[0][1]:.2f}x and {pair[1][0] / pair[1][1]:.2f}x")
    text = [f"Run of {m['date_utc']} UTC, {m['cpus']} CPUs, numpy {m['numpy']} "
            f"({m.get('numpy_blas') or 'BLAS not recorded'}), torch {m.get('torch')}; "
            "ratios move by about 0.1 between runs."]
    if hoisted:
        text.append("Time of numpy hoisted by hand / graphrnn's at the small and medium sizes: "
                    + "; ".join(hoisted) + ".")
    return "\n".join(lines) + "\n\n" + "\n".join(text) + "\n"


def lm_section():
    out = []
    if os.path.exists(os.path.join(RESULTS, "ptb_vs_book.json")):
        b = _load("ptb_vs_book.json")
        s = b["s_per_epoch"]
        out.append(f"- chapter 6 (LSTM, H = 100), training with the book's own code beside graphrnn "
                   f"(`benchmarks/ptb_vs_book.py`, {b['date_utc']} UTC): {s['book']:.0f} s per epoch "
                   f"against {s['graphrnn']:.0f} s, **{b['speedup_of_graphrnn']:.2f}x** (goal 2x; "
                   f"{b.get('numpy_blas') or 'BLAS not recorded'}).")
    if os.path.exists(os.path.join(RESULTS, "lm.json")):
        lm = _load("lm.json")
        rows = lm["rows"]
        for cell in ("lstm", "gru"):
            g, t, bk = (_median(rows, "better", cell, i) for i in ("graphrnn", "torch", "book"))
            if g is None:
                continue
            part = f"graphrnn {cell} {g * 1e3:.0f} ms"
            if t:
                part += f", torch {t * 1e3:.0f} ms (graphrnn **{t / g:.2f}x** as fast)"
            if bk:
                part += f", the book's BetterRnnlm {bk * 1e3:.0f} ms ({bk / g:.2f}x)"
            out.append(f"- one training step at the `better` size (H = 650, 2 layers, tied, V = 10,000), "
                       f"`graphrnn bench --lm`, {lm['meta']['date_utc']} UTC, "
                       f"{lm['meta'].get('numpy_blas') or 'BLAS not recorded'}: {part}.")
        goals = lm.get("goals", [])
        if goals:
            out.append("- goals: " + "; ".join(f"{g['goal']}: {g['ratio']:.2f}x ({'met' if g['met'] else 'NOT met'})"
                                               for g in goals) + ".")
    return "\n".join(out) + "\n"


def classic_section():
    c = _load("classic.json")
    ba, pr, di = c["binary-addition"], c["primes"], c["dinosaurs"]
    rows = ["| task | original program | graphrnn |", "|---|---|---|",
            f"| binary addition (RNN, 10,000 its) | all 128×128 pairs right | accuracy {ba['accuracy']:g} over "
            f"all pairs, {ba['accuracy_unseen']:g} over the pairs never drawn in training |",
            f"| primes (lstm_nico, 10,000 its) | loss ≈ 5e-07 | {pr['loss']:.2g}, every target within "
            f"{pr['max_abs_error']:.1g} |",
            f"| dinosaurs (char RNN, 35,000 its) | smoothed loss ≈ 22.0 | {di['smoothed_loss']:.2f} |"]
    if "lstm-toy" in c:
        rows.insert(4, f"| lstm-toy (lstm_nico, 100 its) | loss ≈ 2.6e-06 at the last iteration | "
                       f"{c['lstm-toy']['final_loss']:.3g} |")
    for cell, runs in sorted(c.get("ptb_ch6", {}).items()):
        name, lr = cell.split("@")
        if (name, 0) not in BOOK_CH6 or lr != "20":
            continue
        book_valid, book_test = BOOK_CH6[(name, 0)]
        v1 = ", ".join(f"{r['valid_epoch1']:.1f}" for r in runs)
        t = ", ".join(f"{r['test']:.1f}" for r in runs)
        rows.append(f"| PTB ch6 {name} (4 epochs, lr 20; seeds {', '.join(str(r['seed']) for r in runs)}) | "
                    f"epoch-1 valid {book_valid[0]:.1f}, test {book_test:.1f} | epoch-1 valid {v1}; test {t} |")
    return "\n".join(rows) + f"\n\nFrom `benchmarks/classic.py` ({c['date_utc']} UTC).\n"


def ch6_section():
    """Chapter 6 at the book's rate of 20, beside the book's own runs."""
    c = _load("classic.json").get("ptb_ch6", {})
    rows = ["| cell | seed | validation perplexity, epochs 1-4 | test | the book's code: validation | test |",
            "|---|---:|---|---:|---|---:|"]
    for cell in ("lstm", "gru", "mgu"):
        for r in sorted(c.get(f"{cell}@20", []), key=lambda r: r["seed"]):
            book_v, book_t = BOOK_CH6.get((cell, r["seed"]), (None, None))
            rows.append(f"| {cell} | {r['seed']} | {' / '.join(f'{v:.1f}' for v in r['valid_history'])} | "
                        f"{r['test']:.1f} | {' / '.join(f'{v:.1f}' for v in book_v) if book_v else ''} | "
                        f"{book_t if book_t else ''} |")
    return "\n".join(rows) + "\n"


def report_section():
    """The sweep's report, as ``graphrnn report`` wrote it (its title dropped)."""
    if not os.path.exists(REPORT):
        return "(the sweep has not finished yet)\n"
    with open(REPORT, encoding="utf-8") as f:
        text = f.read()
    body = text.split("\n", 1)[1].lstrip("\n") if text.startswith("# ") else text
    return body.replace("](perplexity.png)", "](ptb/ch6/perplexity.png)").rstrip("\n") + "\n"


def cpu_section():
    c = _load("classic.json").get("ptb_cpu")
    if not c:
        return "(not run yet)\n"
    cfg = c["config"]
    hist = " / ".join(f"{v:.1f}" for v in c["valid_history"])
    return (f"`--preset cpu --cell {c['cell']}` ({cfg['wordvec']}/{cfg['hidden']}, {cfg['layers']} layers, "
            f"dropout {cfg['dropout']:g}, tied): validation perplexity {c['valid_perplexity']:.1f} "
            f"(best of {c['epochs']} epochs), **test {c['test_perplexity']:.1f}**; rate {c['lr']:g} "
            f"ending at {c['final_lr']:g}; {c['seconds_per_epoch']:.0f} s per epoch of training on a "
            f"shared machine. Validation by epoch: {hist}.\n")


SECTIONS = {"cells": cells_section, "lm": lm_section, "classic": classic_section, "ch6": ch6_section,
            "report": report_section, "cpu": cpu_section}


def render(text):
    def sub(m):
        name = m.group(2)
        if name not in SECTIONS:
            raise KeyError(f"README names unknown generated section {name!r}")
        return m.group(1) + SECTIONS[name]() + m.group(4)
    return MARK.sub(sub, text)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    stale = 0
    for path in DOCUMENTS:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = render(text)
        if new == text:
            continue
        name = os.path.relpath(path, ROOT)
        if "--check" in argv:
            print(f"{name} is stale: run .venv/bin/python benchmarks/readme.py")
            stale = 1
            continue
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(tmp, path)
        print(f"{name} updated")
    return stale


if __name__ == "__main__":
    sys.exit(main())
