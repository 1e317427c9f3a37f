"""What a check compared, for tests to assert on: a check raises on a wrong
value, so ``assert check(...).ok`` tests nothing; one that skipped an array,
or compared none of its elements, would still pass. Imported by the tests as
``from checked import compared_every_gradient`` (pytest puts tests/ on the path)."""


def compared_every_gradient(report, cell, xs=True):
    """Did ``report`` compare every gradient it owes: each parameter's, each
    initial state's and (with ``xs``) the input's?"""
    names = {e.name.removeprefix("grad ") for e in report.entries if e.checked != 0 or e.directions}
    want = {f"param {k!r}" for k in cell.param_shapes()} | {f"state0[{k!r}]" for k in cell.states}
    return want | ({"xs"} if xs else set()) <= names
