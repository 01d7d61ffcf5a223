"""The command line: bad input gives one line on stderr and exit status 2."""

from __future__ import annotations

import subprocess
import sys

from glancing.cli import main


def test_data_info_lists_splits(tiny_tree, capsys):
    assert main(["data", "info", "--data", str(tiny_tree), "--profile", "ci"]) == 0
    out = capsys.readouterr().out
    assert "widget" in out and "train" in out and "scratch" in out


def test_unknown_category_is_one_line_and_exit_2(tiny_tree, capsys):
    code = main(["data", "info", "--data", str(tiny_tree), "--category", "carpet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("glancing: error: category 'carpet'")


def test_python_dash_m_entry_point(tmp_path):
    run = subprocess.run([sys.executable, "-m", "glancing", "data", "info", "--data",
                          str(tmp_path / "nothing")], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert "not found" in run.stderr and "Traceback" not in run.stderr


def test_importing_the_library_leaves_the_matplotlib_backend_alone():
    import os
    import subprocess
    import sys

    # A notebook's inline backend stands in as svg (headless, the default would be agg anyway).
    code = ("import matplotlib; before = matplotlib.get_backend(); assert before == 'svg'; "
            "import glancing.figures, glancing.predict, glancing.pipeline; "
            "assert matplotlib.get_backend() == before, (before, matplotlib.get_backend())")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "MPLBACKEND": "svg"})
