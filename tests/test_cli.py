"""The command as a new user meets it: help that answers, one-line errors
naming the user's own paths, Ctrl-C at any moment, a backend chosen by the
environment, and ``module:function`` found in the current folder."""
import os
import signal
import subprocess
import sys

import pytest

from graphrnn import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    """A script like the installed ``graphrnn`` command. Run as a file from its
    own folder, it puts that folder on sys.path, not the current one (``python
    -m`` and ``-c`` would put the current folder there and hide the difference)."""
    path = tmp_path_factory.mktemp("bin") / "graphrnn_command.py"
    path.write_text("import sys\nfrom graphrnn.cli import main\nsys.exit(main())\n")
    return str(path)


def run_cli(launcher, *argv, env=None, cwd=None):
    """``graphrnn ARGV`` in a fresh interpreter, with this checkout's graphrnn."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, launcher, *argv], capture_output=True, text=True, env=env, cwd=cwd)


def one_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


# ------------------------------------------------------------------ backend

def test_a_backend_that_cannot_load_breaks_neither_help_nor_numpy_only_commands(launcher, tmp_path):
    # The environment asks for CuPy, which this machine lacks, or for a backend that does not exist.
    try:
        import cupy  # noqa: F401
        names = ["nosuch"]
    except ImportError:
        names = ["cupy", "nosuch"]
    for name in names:
        env = {"GRAPHRNN_BACKEND": name}
        for argv in (["--help"], ["train", "--help"]):
            r = run_cli(launcher, *argv, env=env)
            assert r.returncode == 0 and "usage: graphrnn" in r.stdout and not r.stderr, r.stderr
        r = run_cli(launcher, "gradcheck", "rnn", env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and f"{name!r}" in r.stderr, r.stderr
    # an explicit --backend numpy wins over the environment
    r = run_cli(launcher, "train", "primes", "--backend", "numpy", "--hidden", "2", "--iterations", "2",
                "--quiet", "--out", str(tmp_path / "r"), env={"GRAPHRNN_BACKEND": names[0]})
    assert r.returncode == 0, r.stderr


# -------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_while_the_command_starts_is_one_line_not_a_traceback(tmp_path):
    # As the installed command does: import graphrnn.cli, then call main. The
    # child signals "ready" from inside main before the parser is built (the
    # parser's construction imports the tasks, numpy, ...) and waits there for
    # the Ctrl-C. The import before main loads nothing heavy (next test), so
    # what stays unguarded is Python's own start-up and a few milliseconds.
    code = ("import os, sys, time; import graphrnn.cli as cli; real = cli.build_parser\n"
            "def slow(*argv):\n"
            "    os.write(1, b'ready\\n'); time.sleep(60)\n"
            "    return real(*argv)\n"
            "cli.build_parser = slow\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
    for argv in (["train", "binary-addition", "--iterations", "5", "--out", str(tmp_path / "r")],
                 ["gradcheck", "gru"], ["--help"]):
        # A shell's background job inherits SIGINT ignored, and a child would too;
        # a terminal's Ctrl-C reaches a foreground command, so start the child as
        # one (a caught signal is reset to its default at exec, an ignored one is not).
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            p = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        finally:
            if ignored:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate()
        assert p.returncode == 130, (p.returncode, err)
        assert err.strip() == "graphrnn: interrupted", err


def test_importing_graphrnn_loads_nothing_heavy_until_a_name_is_used():
    code = ("import sys, graphrnn, graphrnn.cli; "
            "print(sorted(m for m in ('numpy', 'networkx', 'graphviz', 'matplotlib') if m in sys.modules)); "
            "print(graphrnn.unroll.__module__, graphrnn.render.__module__, graphrnn.cells.__name__); "
            "import graphrnn.render, graphrnn.unroll; print(callable(graphrnn.render), callable(graphrnn.unroll))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["[]", "graphrnn.unroll graphrnn.render graphrnn.cells", "True True"]


# --------------------------------------------------------------------- paths

@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    return f


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot write into (root ignores permission bits:
    /proc/self is not writable even for root)."""
    if os.geteuid() == 0:
        yield "/proc/self"
        return
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o500)
    yield str(d)
    d.chmod(0o700)


def output_cases(a_file, tmp_path, unwritable):
    """(argv, the path the message must name) for every command that writes."""
    cases = []
    for where in (str(a_file / "sub"), str(a_file), os.path.join(unwritable, "out")):
        cases += [
            (["train", "primes", "--hidden", "2", "--iterations", "2", "--quiet", "--out", where], where),
            (["demo", "--out", where], where),
            (["bench", "--quick", "--cells", "rnn", "--sizes", "tiny", "--rounds", "1", "--no-torch",
              "--out", where], where),
            (["render", "rnn", "-o", os.path.join(where, "x.dot")] if where != str(a_file)
             else ["render", "rnn", "-o", str(a_file / "x.dot")], where),
        ]
    cases.append((["render", "rnn", "-o", str(tmp_path)], str(tmp_path)))  # a folder, not a file
    return cases


def test_outputs_that_cannot_be_written_are_one_line_naming_the_users_path(a_file, tmp_path, unwritable, capsys):
    for argv, where in output_cases(a_file, tmp_path, unwritable):
        assert cli.main(argv) == 2, argv
        line = one_line(capsys)
        assert where in line, (argv, line)
        assert ".tmp" not in line, line


def test_a_report_of_a_folder_without_runs_is_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "no finished runs" in one_line(capsys)


# ----------------------------------------------------------------------- help

def test_train_help_lists_each_tasks_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    from graphrnn import tasks
    for name, cls in tasks.TASKS.items():
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + ":"))
        if "iterations" in cls.defaults:
            assert f"iterations {cls.defaults['iterations']}" in line
        assert f"lr {cls.defaults['lr']}" in line and f"cell {cls.defaults['cell']}" in line


def test_every_gradcheck_option_has_help_text(capsys):
    with pytest.raises(SystemExit):
        cli.main(["gradcheck", "--help"])
    out = capsys.readouterr().out
    for flags, kw in cli.gradcheck_options():
        assert kw.get("help"), flags
        assert flags[0] in out
    assert "(default: 3)" in out


# ------------------------------------------------------------- module:function

MYCELL = '''
import graphrnn as gr

def peephole(input_size, hidden_size):
    c = gr.CellBuilder("peephole")
    x = c.input("x", input_size)
    h = c.state("h", hidden_size)
    c.update(h=gr.tanh(x @ c.param("Wx", (input_size, hidden_size)) + h @ c.param("Wh", (hidden_size, hidden_size))))
    return c.build()
'''


def test_module_function_cells_are_found_in_the_current_folder(tmp_path, launcher):
    (tmp_path / "cwd_cells.py").write_text(MYCELL)
    env = {}
    r = run_cli(launcher, "render", "cwd_cells:peephole", "-o", "p.dot", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.dot").exists()
    r = run_cli(launcher, "gradcheck", "cwd_cells:peephole", cwd=tmp_path, env=env)
    assert r.returncode == 0 and "ok:" in r.stdout, r.stderr
    r = run_cli(launcher, "train", "primes", "--cell", "cwd_cells:peephole", "--hidden", "3", "--iterations", "2",
                "--quiet", "--out", "r", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------- bench

def test_bench_writes_where_asked_and_by_default_under_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "--quick", "--cells", "rnn", "--sizes", "tiny", "--rounds", "1", "--no-torch"]
    monkeypatch.setenv("GRAPHRNN_BENCH_CHILD", "1")  # measure in this process
    assert cli.main(argv) == 0
    assert sorted(os.listdir(tmp_path / "runs" / "bench")) == ["bench_quick.json", "bench_quick.md"]
    assert cli.main(argv + ["--out", "mine"]) == 0
    assert sorted(os.listdir(tmp_path / "mine")) == ["bench_quick.json", "bench_quick.md"]


def test_make_has_a_target_of_its_own_for_the_committed_benchmark_results():
    make = open(os.path.join(ROOT, "Makefile")).read()
    rule = make.split("\nbench-results:", 1)[1].split("\n\n", 1)[0]
    assert "--out benchmarks/results" in rule
    bench_rule = make.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    assert "benchmarks/results" not in bench_rule


@pytest.mark.parametrize("argv, says", [
    (["train", "primes", "--cell", ":f"], "expected MODULE:FUNCTION"),
    (["train", "primes", "--cell", "json:"], "expected MODULE:FUNCTION"),
    (["train", "primes", "--cell", ".rel:f"], "cannot import module '.rel'"),
    (["train", "primes", "--cell", "os:getcwd", "--iterations", "1"], "cell os:getcwd(50, 100) raised TypeError"),
    (["gradcheck", "os.path:join"], "cell os.path:join(3, 4) raised TypeError"),
    (["render", "os:getcwd"], "raised TypeError"),
    (["train", "primes", "--out", "", "--iterations", "1"], "the run folder is an empty path"),
])
def test_a_module_function_that_is_not_a_cell_factory_is_one_line(argv, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert says in one_line(capsys)
