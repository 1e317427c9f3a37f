"""What a check compared, for tests to assert on: a check raises on a wrong
value, so ``assert check(...).ok`` tests nothing; one that skipped an array,
or compared none of its elements, would still pass. Imported by the tests as
``from checked import compared_every_gradient`` (pytest puts tests/ on the path).
Also the tests' one user primitive, ``RoundST`` (each test registers it and
takes it out again)."""
import graphrnn as gr


def compared_every_gradient(report, cell, xs=True):
    """Did ``report`` compare every gradient it owes: each parameter's, each
    initial state's and (with ``xs``) the input's?"""
    names = {e.name.removeprefix("grad ") for e in report.entries if e.checked != 0 or e.directions}
    want = {f"param {k!r}" for k in cell.param_shapes()} | {f"state0[{k!r}]" for k in cell.states}
    return want | ({"xs"} if xs else set()) <= names


class RoundST(gr.Elementwise):
    """y = round(x);  dx = dy   (docs/cells.md's straight-through rounding: a surrogate, not the
    derivative, 0 almost everywhere; no native form)"""
    name = "round_st_test"
    rule = ("dx = dy (straight-through)",)
    surrogate = (0,)

    def forward(self, xp, x, out=None):
        return xp.round(x, out=out)

    def backward(self, xp, dy, xs, y, needs):
        return (dy,)
