"""A language model on any UTF-8 text: ``graphrnn train text --data FILE``.

The PTB task's model and training (``graphrnn.models.RNNLM``: embedding, any
cell, optionally more layers, softmax over the vocabulary; streams of windows
with the state carried, the gradient's global norm clipped, the best
parameters by validation perplexity kept) on a corpus from
``graphrnn.data.text``: characters (``--set level=char``, the default) or
words (``--set level=word``) of one file, its last ``valid_fraction`` held
out. Validation perplexity is reported beside the unigram model's on the
same held-out text, the baseline a model must beat to have learned order.
``graphrnn sample text --checkpoint DIR`` generates from it.
"""
from __future__ import annotations

import math

from ..data import text as textdata
from ..errors import DataError
from .base import TaskError, number
from .ptb import PTB, check_lm_config

SETTINGS = ("cell", "level", "valid_fraction", "wordvec", "hidden", "layers", "batch", "steps", "lr",
            "clip", "epochs", "dropout", "tie", "lr_decay", "epoch_restart", "seed", "optimizer",
            "log_every", "data", "eval_batch", "dtype")
DERIVED = ("iterations", "data_sha256", "vocab_size")


class Text(PTB):
    name = "text"
    description = "a character- or word-level language model on any UTF-8 text file"
    defaults = {"cell": "lstm", "level": "char", "valid_fraction": 0.1, "wordvec": 32, "hidden": 128,
                "layers": 1, "batch": 16, "steps": 32, "lr": 0.005, "clip": 1.0, "epochs": 10,
                "dropout": 0.0, "tie": False, "lr_decay": 1.0, "epoch_restart": False, "seed": 0,
                "optimizer": "adam", "log_every": 50, "data": None, "eval_batch": 4, "dtype": "float32"}
    headline = ("valid_perplexity",)
    resumable = ("epochs", "lr", "log_every", "clip", "lr_decay", "data")

    @classmethod
    def resolve_config(cls, overrides):
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "iterations" in overrides and "data_sha256" not in overrides:
            raise TaskError("text trains by epochs: use --epochs, not --iterations")
        unknown = [k for k in overrides if k not in SETTINGS and k not in DERIVED]
        if unknown:
            raise TaskError(f"task 'text' has no setting {unknown[0]!r}; settings: {', '.join(SETTINGS)}")
        config = check_lm_config({"task": cls.name, **cls.defaults, **overrides})
        if config["level"] not in textdata.LEVELS:
            raise TaskError(f"level must be one of {', '.join(textdata.LEVELS)}, got {config['level']!r}")
        f = number(config, "valid_fraction")
        if not 0.0 < f < 1.0:
            raise TaskError(f"valid-fraction must be between 0 and 1, got {config['valid_fraction']!r}")
        config["valid_fraction"] = f
        return config

    def load_corpus(self, cfg):
        try:
            corpus = textdata.TextCorpus(cfg["data"], cfg["level"], cfg["valid_fraction"])
        except DataError as exc:
            raise TaskError(str(exc)) from None
        if cfg.get("data_sha256") not in (None, corpus.sha256):
            raise TaskError(f"{corpus.path} differs from the text this run was trained on (SHA256 "
                            f"{corpus.sha256[:12]}… vs {cfg['data_sha256'][:12]}…); resume with the original file")
        cfg["data_sha256"] = corpus.sha256
        for split, ids, rows in (("training", corpus.train, cfg["batch"]), ("held-out", corpus.valid,
                                                                              cfg["eval_batch"])):
            if len(ids) - 1 < rows * cfg["steps"]:
                raise TaskError(f"{corpus.path}: its {split} part has {len(ids)} {cfg['level']} tokens, too "
                                f"few for {rows} streams of {cfg['steps']} steps; use a smaller --set "
                                f"{'batch' if split == 'training' else 'eval_batch'}=... or --set steps=...")
        return corpus

    def title(self):
        return f"{self.config['level']}-level text"

    def final_metrics(self):
        """Validation perplexity (best epoch) beside the unigram model's on the same text."""
        if self.best is not None:
            for k, v in self.best.items():
                self.params[k][...] = v
        cfg, c = self.config, self.corpus
        return {"valid_perplexity": self.best_ppl if self.best is not None else None,
                "unigram_perplexity": textdata.unigram_perplexity(c.train, c.valid, len(self.words)),
                "epochs": len(self.history), "cell": cfg["cell"], "level": cfg["level"], "lr": cfg["lr"],
                "final_lr": self.opt.lr, "seed": cfg["seed"],
                "valid_history": [h["valid_perplexity"] for h in self.history],
                "vocab_size": len(self.words), "train_tokens": len(c.train), "valid_tokens": len(c.valid),
                "data_sha256": cfg.get("data_sha256")}

    def sample(self, n, seed, *, temperature=1.0, start=None):
        """``n`` tokens generated after ``start`` (characters, or words; default: a line break)."""
        if self.best is not None:
            for k, v in self.best.items():
                self.params[k][...] = v
        ids = {w: i for i, w in enumerate(self.words)}
        char = self.config["level"] == "char"
        first = (list(start) if char else start.split()) if start else ["\n" if char else textdata.EOS]
        unknown = [w for w in first if w not in ids]
        if unknown:
            raise TaskError(f"start {'character' if char else 'word'} {unknown[0]!r} is not in the "
                            "text's vocabulary")
        if not math.isfinite(temperature) or temperature <= 0:
            raise TaskError(f"--temperature must be a positive number, got {temperature}")
        out = self.model.generate([ids[w] for w in first], n, temperature=temperature, seed=seed)
        body = textdata.decode(self.words, out, self.config["level"])
        prefix = "" if start is None else (start if char else " ".join(first) + " ")
        return [prefix + body]
