"""(placeholder: native engine not built yet)"""


def loops(plan, engine, xp, dtype, n, t):
    return None
