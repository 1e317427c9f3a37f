"""Penn Treebank word-level language model ("Deep Learning from Scratch 2", chapter 6).

``graphrnn train ptb --preset ch6|better|cpu --cell lstm|gru|mgu|MODULE:FUNCTION``.
The model is ``graphrnn.models.RNNLM``; the data ``graphrnn.data.ptb``.

Training follows the book's scripts: N streams through the training corpus,
windows of T words, the state carried across windows (truncated BPTT); SGD
with the gradients' global norm clipped; after every epoch the validation
perplexity (the book's ``eval_perplexity``: 10 streams, windows of 35, state
carried), the best parameters kept, and, where the preset says so, the
learning rate divided by 4 when validation perplexity got worse. Each epoch
starts from a zero state at the start of the streams (``train_better_rnnlm.py``
calls ``fit`` once per epoch). The test perplexity is taken with the best
parameters.

An iteration is one window; the trainer counts iterations, so a run of E
epochs is E · iterations_per_epoch iterations and ``--resume`` can stop and
continue anywhere, bit for bit.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .. import backend, files, optim, plots, schema
from ..data import DataError
from ..data import ptb as ptbdata
from ..models import RNNLM
from ..primitives import GraphError
from .base import Task, TaskError, check_run_settings, number

# The book's settings. ``lr`` may depend on the cell: the GRU write-up trained
# BetterRnnlm's GRU at 10 because at 20 its early perplexity swung widely.
PRESETS = {
    # train_rnnlm.py calls fit once for all epochs: the streams run on and the
    # state is carried from one epoch into the next.
    "ch6": {"wordvec": 100, "hidden": 100, "layers": 1, "batch": 20, "steps": 35, "lr": 20.0,
            "clip": 0.25, "epochs": 4, "dropout": 0.0, "tie": False, "lr_decay": 1.0,
            "epoch_restart": False},
    # train_better_rnnlm.py calls fit once per epoch: each starts the streams
    # again from their beginnings, from a zero state.
    "better": {"wordvec": 650, "hidden": 650, "layers": 2, "batch": 20, "steps": 35,
               "lr": {"gru": 10.0, "*": 20.0}, "clip": 0.25, "epochs": 40, "dropout": 0.5,
               "tie": True, "lr_decay": 4.0, "epoch_restart": True},
    # BetterRnnlm's recipe at half its width: about an hour on 2 cores (docs/ptb.md).
    "cpu": {"wordvec": 320, "hidden": 320, "layers": 2, "batch": 20, "steps": 35,
            "lr": {"gru": 10.0, "*": 20.0}, "clip": 0.25, "epochs": 20, "dropout": 0.4,
            "tie": True, "lr_decay": 4.0, "epoch_restart": True},
}

SETTINGS = ("preset", "cell", "wordvec", "hidden", "layers", "batch", "steps", "lr", "clip",
            "epochs", "dropout", "tie", "lr_decay", "epoch_restart", "seed", "optimizer", "log_every",
            "data", "eval_batch", "dtype")
# Set by the task itself, recorded so a resumed run can be checked against them.
DERIVED = ("iterations", "data_sha256", "vocab_size")


def preset_config(name, cell):
    try:
        p = dict(PRESETS[name])
    except (KeyError, TypeError):
        raise TaskError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None
    if isinstance(p["lr"], dict):
        p["lr"] = p["lr"].get(cell, p["lr"]["*"])
    return p


def _fingerprint(sums):
    """One SHA256 over the three files' sums (train, valid, test order)."""
    import hashlib
    return hashlib.sha256("".join(sums[f] for f in ptbdata.FILES.values()).encode()).hexdigest()


def check_lm_config(config):
    """A language model's sizes, rate, clipping, dropout, tying and dtype
    checked (and made ints, floats and bools); a ``TaskError`` names the setting."""
    for k in ("wordvec", "hidden", "layers", "batch", "steps", "epochs", "log_every", "eval_batch"):
        try:
            v = int(config[k])
        except (TypeError, ValueError):
            v = 0
        if v < 1 or v != config[k]:
            raise TaskError(f"{k.replace('_', '-')} must be a positive integer, got {config[k]!r}")
        config[k] = v
    for k, lo in (("lr", 0.0), ("clip", 0.0), ("lr_decay", 1.0)):
        v = number(config, k)
        if not math.isfinite(v) or v < lo or (lo == 0.0 and v == 0.0):
            raise TaskError(f"{k.replace('_', '-')} must be a finite number "
                            f"{'> 0' if lo == 0 else '>= 1'}, got {config[k]!r}")
        config[k] = v
    config["dropout"] = number(config, "dropout")
    if not 0.0 <= config["dropout"] < 1.0:
        raise TaskError(f"dropout must be in [0, 1), got {config['dropout']}")
    config["tie"] = bool(config["tie"])
    config["epoch_restart"] = bool(config["epoch_restart"])
    if config["tie"] and config["wordvec"] != config["hidden"]:
        raise TaskError(f"tied weights need wordvec == hidden, got {config['wordvec']} and "
                        f"{config['hidden']}")
    check_run_settings(config)
    if not isinstance(config["dtype"], str) or config["dtype"] not in ("float32", "float64"):
        raise TaskError(f"dtype must be float32 or float64, got {config['dtype']!r}")
    return config


class PTB(Task):
    name = "ptb"
    description = "word-level language model on the Penn Treebank (GRU vs LSTM by perplexity)"
    defaults = {"preset": "ch6", "cell": "lstm", "seed": 0, "optimizer": "sgd", "log_every": 100,
                "data": None, "eval_batch": 10, "dtype": "float32", **PRESETS["ch6"]}
    headline = ("valid_perplexity", "test_perplexity")
    # The rate and its schedule steer training; the data folder may move (its
    # files are checked by their SHA256).
    resumable = ("epochs", "lr", "log_every", "clip", "lr_decay", "data")
    state_schema = {
        "lr": schema.NUMBER, "best_ppl": schema.NULLABLE_NUMBER,
        "history": [{"epoch": schema.COUNT, "valid_perplexity": schema.NUMBER, "lr": schema.NUMBER}],
        "window": [schema.NUMBER], "running": schema.NULLABLE_NUMBER,
        "clipped": schema.COUNT, "steps": schema.COUNT,
        "dropout_rng": {"state": schema.TEXT, "inc": schema.TEXT, "has_uint32": schema.INT,
                        "uinteger": schema.INT},
        "vocab": [schema.TEXT],
    }

    # ---------------------------------------------------------------- config
    @classmethod
    def resolve_config(cls, overrides):
        """Defaults, then the preset (``overrides['preset']``), then the overrides."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "iterations" in overrides and "data_sha256" not in overrides:
            raise TaskError("ptb trains by epochs: use --epochs, not --iterations")
        unknown = [k for k in overrides if k not in SETTINGS and k not in DERIVED]
        if unknown:
            raise TaskError(f"task 'ptb' has no setting {unknown[0]!r}; settings: {', '.join(SETTINGS)}")
        preset = overrides.get("preset", cls.defaults["preset"])
        cell = overrides.get("cell", cls.defaults["cell"])
        return check_lm_config({"task": cls.name, **cls.defaults, **preset_config(preset, cell), **overrides})


    # ------------------------------------------------------------- building
    def __init__(self, config, *, vocab=None):
        """``vocab`` (a list of words) builds the model for sampling without data files."""
        super().__init__(config)
        cfg = config
        self.corpus = None
        self._on_device = {}
        if vocab is None:
            self.corpus = self.load_corpus(cfg)
            self.words = self.corpus.words
            self.epoch_length = ptbdata.iterations_per_epoch(self.corpus.train, cfg["batch"], cfg["steps"])
            cfg["iterations"] = cfg["epochs"] * self.epoch_length
        else:
            self.words = list(vocab)
            self.epoch_length = None
        cfg["vocab_size"] = len(self.words)
        try:
            self.model = RNNLM(len(self.words), cfg["wordvec"], cfg["hidden"], cell=cfg["cell"],
                               layers=cfg["layers"], dropout=cfg["dropout"], tie_weights=cfg["tie"],
                               seed=cfg["seed"], dtype=np.dtype(cfg["dtype"]))
        except GraphError as exc:
            raise TaskError(str(exc)) from None
        self.params = self.model.params
        self.opt = self.make_optimizer()
        self.best = None             # copies of the parameters with the best validation perplexity
        self.best_ppl = math.inf
        self.history = []            # one record per finished epoch
        self._window = [0.0, 0]      # loss sum and count since the last log line
        self._running = None         # running training perplexity, last logged
        self.clipped = 0             # iterations whose gradient norm was clipped
        self.steps = 0

    def load_corpus(self, cfg):
        """The corpus (``words``, ``train``, ``valid``, ``test``), refusing files
        that differ from the ones the run (``data_sha256``) was trained on."""
        try:
            corpus = ptbdata.load(cfg["data"], progress=True)
        except DataError as exc:
            raise TaskError(str(exc)) from None
        digest = _fingerprint(corpus.sha256)
        if cfg.get("data_sha256") not in (None, digest):
            raise TaskError(f"the PTB files in {corpus.folder} differ from the ones this run "
                            f"was trained on (SHA256 {digest[:12]}… vs {cfg['data_sha256'][:12]}…); "
                            "resume with the original files")
        cfg["data_sha256"] = digest
        return corpus

    @classmethod
    def for_sampling(cls, config, task_state):
        if "vocab" not in task_state:
            raise TaskError("checkpoint has no vocabulary to sample with")
        return cls(config, vocab=task_state["vocab"])

    def built_cell(self):
        return self.model.cells[0]

    # ------------------------------------------------------------- training
    def _ids(self, split):
        """A split's word ids where the model runs: moved to the GPU once, not per batch."""
        xp = backend.xp()
        cached = self._on_device.get(split)
        if cached is None or cached[0] is not xp:
            cached = self._on_device[split] = (xp, backend.asarray(getattr(self.corpus, split)))
        return cached

    def batch(self, i):
        k = i % self.epoch_length if self.config["epoch_restart"] else i
        xp, ids = self._ids("train")
        return ptbdata.train_batch(ids, self.config["batch"], self.config["steps"], k, xp)

    def step(self, i):
        m = self.model
        if i % self.epoch_length == 0 and self.config["epoch_restart"]:
            m.reset_state()
        xs, ts = self.batch(i)
        loss = m.forward(xs, ts)
        m.backward()
        if optim.clip_global_norm(m.grads, self.config["clip"]) > self.config["clip"]:
            self.clipped += 1
        self.opt.step(m.grads)
        self._window[0] += loss
        self._window[1] += 1
        self.steps += 1
        return loss

    def log(self, i, loss):
        s, n = self._window
        ppl = math.exp(s / n) if n else math.exp(loss)
        self._running = ppl
        self._window = [0.0, 0]
        epoch = i // self.epoch_length + 1
        rec = {"iteration": i, "epoch": epoch, "loss": loss, "train_perplexity": ppl, "lr": self.opt.lr}
        k = i % self.epoch_length + 1
        return rec, [f"epoch {epoch} | iteration {k}/{self.epoch_length} | perplexity {ppl:.2f}"]

    def progress(self):
        return None if self._running is None else f"ppl {self._running:.1f} lr {self.opt.lr:g}"

    def evaluate(self, split):
        xp, ids = self._ids(split)
        return self.model.perplexity(ptbdata.eval_batches(ids, self.config["eval_batch"], self.config["steps"], xp))

    def end_epoch(self, epoch):
        """Validation after epoch ``epoch`` (1-based): keep the best, maybe divide the rate."""
        t0 = time.perf_counter()
        carried = self.model.get_state()
        ppl = self.evaluate("valid")
        rec = {"epoch": epoch, "valid_perplexity": ppl, "lr": self.opt.lr}
        line = f"epoch {epoch}: valid perplexity {ppl:.2f} (lr {self.opt.lr:g})"
        if ppl < self.best_ppl:
            self.best_ppl = ppl
            self.best = {k: v.copy() for k, v in self.params.items()}
        elif self.config["lr_decay"] > 1.0:
            self.opt.lr /= self.config["lr_decay"]
            rec["lr_next"] = self.opt.lr
            line += f"; worse than {self.best_ppl:.2f}, lr now {self.opt.lr:g}"
        # evaluation leaves a zero state; streams that run on keep theirs
        self.model.set_state({} if self.config["epoch_restart"] else carried)
        rec["eval_s"] = round(time.perf_counter() - t0, 3)
        self.history.append({k: rec[k] for k in ("epoch", "valid_perplexity", "lr")})
        return rec, [line]

    def final_metrics(self):
        """Test perplexity with the best parameters (the last ones if no epoch ended)."""
        if self.best is not None:
            for k, v in self.best.items():
                self.params[k][...] = v
        cfg = self.config
        test = self.evaluate("test") if self.corpus is not None else None
        return {"valid_perplexity": self.best_ppl if self.best is not None else None,
                "test_perplexity": test, "epochs": len(self.history), "cell": cfg["cell"],
                "preset": cfg["preset"], "lr": cfg["lr"], "final_lr": self.opt.lr, "seed": cfg["seed"],
                "valid_history": [h["valid_perplexity"] for h in self.history],
                "clip_fraction": self.clipped / self.steps if self.steps else None,
                "vocab_size": len(self.words), "data_sha256": cfg.get("data_sha256")}

    # ----------------------------------------------------------- checkpoints
    def extra_state(self):
        arrays = {f"state.{k}": v for k, v in self.model.get_state().items()}
        if self.best is not None:
            arrays.update({f"best.{k}": v for k, v in self.best.items()})
        rng = self.model.rng.bit_generator.state
        meta = {"lr": self.opt.lr, "best_ppl": None if self.best is None else self.best_ppl,
                "history": self.history, "window": self._window, "running": self._running,
                "clipped": self.clipped, "steps": self.steps,
                "dropout_rng": {"state": str(rng["state"]["state"]), "inc": str(rng["state"]["inc"]),
                                "has_uint32": rng["has_uint32"], "uinteger": rng["uinteger"]},
                "vocab": self.words}
        return arrays, meta

    def load_extra_state(self, arrays, meta):
        self.model.set_state({k[len("state."):]: v for k, v in arrays.items() if k.startswith("state.")})
        best = {k[len("best."):]: backend.asarray(v) for k, v in arrays.items() if k.startswith("best.")}
        if best and set(best) != set(self.params):
            raise TaskError("checkpoint: the kept best parameters do not match the model")
        self.best = best or None
        self.best_ppl = math.inf if meta["best_ppl"] is None else float(meta["best_ppl"])
        self.opt.lr = float(meta["lr"])
        self.history = list(meta["history"])
        self._window = [float(meta["window"][0]), int(meta["window"][1])]
        self._running = meta["running"]
        self.clipped, self.steps = int(meta["clipped"]), int(meta["steps"])
        r = meta["dropout_rng"]
        self.model.rng.bit_generator.state = {
            "bit_generator": "PCG64", "state": {"state": int(r["state"]), "inc": int(r["inc"])},
            "has_uint32": int(r["has_uint32"]), "uinteger": int(r["uinteger"])}
        if list(meta["vocab"]) != list(self.words):
            raise TaskError("checkpoint: its vocabulary differs from the data's")

    # -------------------------------------------------------------- sampling
    def sample(self, n, seed, *, temperature=1.0, start=None):
        """Text of ``n`` words generated after ``start`` (words; default ``<eos>``)."""
        if self.best is not None:
            for k, v in self.best.items():
                self.params[k][...] = v
        ids = {w: i for i, w in enumerate(self.words)}
        start_words = (start or ptbdata.EOS).split()
        unknown = [w for w in start_words if w not in ids]
        if unknown:
            raise TaskError(f"start word {unknown[0]!r} is not in the vocabulary")
        exclude = [ids[w] for w in ("<unk>",) if w in ids]
        out = self.model.generate([ids[w] for w in start_words], n, temperature=temperature,
                                  seed=seed, exclude=exclude)
        text = ptbdata.decode(self.words, out)
        prefix = "" if start is None else " ".join(start_words) + " "
        return [prefix + text]

    def title(self):
        return f"PTB {self.config['preset']}"

    def plot(self, losses, path):
        """Perplexity curves: training (running, per log interval) and validation per epoch."""
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        y = np.exp(np.asarray(losses, dtype=np.float64))
        w = max(1, min(len(y), self.config["log_every"]))
        fig, ax = plt.subplots(figsize=(7, 4))
        if len(y) >= w:
            smooth = np.exp(np.convolve(np.log(y), np.ones(w) / w, mode="valid"))
            ax.plot((np.arange(w - 1, len(y)) + 1) / self.epoch_length, smooth, lw=1.2,
                    label=f"training (mean over {w} iterations)")
        if self.history:
            ax.plot([h["epoch"] for h in self.history], [h["valid_perplexity"] for h in self.history],
                    "o-", label="validation")
        plots.log_y(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel("perplexity")
        cfg = self.config
        ax.set_title(f"{self.title()}: {cfg['cell']}, lr {cfg['lr']:g}, seed {cfg['seed']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        return files.save_figure(fig, path)
