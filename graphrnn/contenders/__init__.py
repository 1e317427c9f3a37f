"""What ``graphrnn bench`` times graphrnn against, shipped with the package so
that the command works from an installed wheel, not only from a clone:

- ``cells``: hand-written numpy layers (the book's per-step style, and the
  same cell hoisted by hand) and PyTorch's ``nn.RNN/GRU/LSTM``;
- ``jax_cells``: any cell in ``jax.numpy`` under ``jax.jit`` over ``lax.scan``;
- ``lm``: the PTB language model in PyTorch, and the book's own model from a
  checkout the user names.

The torch and JAX contenders import their library when built; where it is
missing the command says in one line what to install. Studies that need the
repository (its tasks, its committed results) stay in ``benchmarks/``.
"""
