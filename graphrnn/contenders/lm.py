"""The language models graphrnn's PTB model is timed against (``graphrnn bench --lm``).

- ``TorchLM``: the same network in PyTorch on the CPU, written as a PyTorch
  user would: ``nn.Embedding``, ``nn.LSTM``/``nn.GRU`` with ``num_layers``
  (dropout between layers), ``nn.Dropout`` after the embedding and before the
  output, a ``nn.Linear`` output tied to the embedding, ``cross_entropy``,
  ``clip_grad_norm_`` and a plain SGD step.
- ``book_step``: the book's own ``Rnnlm`` (chapter 6) or ``BetterRnnlm``,
  imported from a checkout of oreilly-japan/deep-learning-from-scratch-2 whose
  folder is given (never copied here), stepped the way its ``RnnlmTrainer``
  steps: forward, backward, ``remove_duplicate``, ``clip_grads``, SGD.

Each contender is a callable running one training step on fixed (N, T) ids.
"""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np


class TorchLM:
    def __init__(self, V, D, H, layers, cell, dropout, tie, lr=20.0, clip=0.25, seed=0):
        import torch
        from torch import nn
        torch.manual_seed(seed)
        self.torch = torch
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.embed = nn.Embedding(V, D)
        self.rnn = rnn(D, H, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(H, V)
        if tie:
            self.out.weight = self.embed.weight
        self.modules = nn.ModuleList([self.embed, self.rnn, self.out])
        self.modules.train()
        self.opt = torch.optim.SGD(self.modules.parameters(), lr=lr)
        self.clip = clip
        self.state = None

    def __call__(self, xs, ts):
        torch = self.torch
        x = self.drop(self.embed(xs))
        state = self.state
        if state is not None:  # truncated BPTT: carry the state, not its history
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        hs, self.state = self.rnn(x, state)
        z = self.out(self.drop(hs))
        loss = torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), ts.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.modules.parameters(), self.clip)
        self.opt.step()
        return float(loss.detach())


def torch_step(V, D, H, layers, cell, dropout, tie, xs, ts, seed=0):
    import torch
    model = TorchLM(V, D, H, layers, cell, dropout, tie, seed=seed)
    txs, tts = torch.from_numpy(xs.astype(np.int64)), torch.from_numpy(ts.astype(np.int64))
    return lambda: model(txs, tts)


def book_step(book_dir, V, D, H, better, dropout, xs, ts, lr=20.0, clip=0.25):
    """One training step of the book's own LSTM language model (Rnnlm, or BetterRnnlm)."""
    ch06 = os.path.join(os.path.abspath(book_dir), "ch06")
    if not os.path.isfile(os.path.join(ch06, "rnnlm.py")):
        raise FileNotFoundError(f"{book_dir} is not a checkout of deep-learning-from-scratch-2 "
                                "(no ch06/rnnlm.py)")
    for p in (ch06, os.path.dirname(ch06)):
        if p not in sys.path:
            sys.path.insert(0, p)
    optimizer = importlib.import_module("common.optimizer")
    trainer = importlib.import_module("common.trainer")
    util = importlib.import_module("common.util")
    if better:
        model = importlib.import_module("better_rnnlm").BetterRnnlm(V, D, H, dropout)
    else:
        model = importlib.import_module("rnnlm").Rnnlm(V, D, H)
    opt = optimizer.SGD(lr)
    bx, bt = xs.astype(np.int32), ts.astype(np.int32)

    def step():
        loss = model.forward(bx, bt)
        model.backward()
        params, grads = trainer.remove_duplicate(model.params, model.grads)
        util.clip_grads(grads, clip)
        opt.update(params, grads)
        return float(loss)
    return step
