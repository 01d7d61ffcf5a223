"""The book's chapters: present, executed, light, clean, and never re-defining the library.

The chapters import ``glancing`` and show its code; a chapter that defines (``def``/``class`` at
the top level of a code cell) a name the library defines would drift from it unnoticed.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
MAX_NOTEBOOK_BYTES = 1_000_000


def _toc_files(node) -> list[str]:
    """Every ``file`` (and the ``root``) of a Jupyter Book 1 table of contents."""
    files = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                files.append(node[key])
        for value in node.values():
            if isinstance(value, (list, dict)):
                files += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            files += _toc_files(item)
    return files


def _source_path(entry: str) -> Path | None:
    for suffix in ("", ".ipynb", ".md"):
        path = ROOT / f"{entry}{suffix}"
        if path.is_file():
            return path
    return None


TOC_ENTRIES = _toc_files(TOC)
NOTEBOOKS = sorted(p for e in TOC_ENTRIES if (p := _source_path(e)) and p.suffix == ".ipynb")


def _cells(path: Path, cell_type: str = "code") -> list[dict]:
    notebook = json.loads(path.read_text())
    return [cell for cell in notebook["cells"] if cell["cell_type"] == cell_type]


def _source(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def _python(source: str) -> str:
    """Cell source without IPython magics and shell escapes, which are not Python."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def _library_names() -> dict[str, str]:
    """Top-level function and class names defined anywhere in ``glancing/`` -> their module."""
    names = {}
    for path in sorted((ROOT / "glancing").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.setdefault(node.name, str(path.relative_to(ROOT)))
    return names


def _text_outputs(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(_source({"source": output["text"]}))
        elif output["output_type"] == "error":
            parts += output.get("traceback", [])
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/") or mime.endswith("json"):
                parts.append(value if isinstance(value, str) else json.dumps(value))
    return "\n".join(parts)


def test_toc_lists_the_chapters_and_they_exist():
    assert TOC["root"] == "book/intro"
    missing = [entry for entry in TOC_ENTRIES if _source_path(entry) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    assert NOTEBOOKS, "no chapter notebook in _toc.yml"


def test_the_library_defines_names_to_check_against():
    names = _library_names()
    assert {"PartialConv2d", "GlobalNet", "hole_mask", "mask_pool"} <= names.keys()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_does_not_redefine_the_library(path):
    library = _library_names()
    clashes = []
    for index, cell in enumerate(_cells(path)):
        tree = ast.parse(_python(_source(cell)))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name in library:
                    clashes.append(f"code cell {index}: {node.name} (defined in "
                                   f"{library[node.name]}; import it instead)")
    assert not clashes, f"{path.name} re-defines what glancing owns: {clashes}"


def test_redefinition_check_catches_a_clash():
    # The check itself: a cell defining a library name is caught, a new name is not.
    library = _library_names()
    tree = ast.parse("import torch\n\nclass PartialConv2d:\n    pass\n\ndef helper():\n    pass\n")
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert [name for name in defined if name in library] == ["PartialConv2d"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_is_committed_executed_without_errors(path):
    code_cells = [cell for cell in _cells(path) if _source(cell).strip()]
    unexecuted = [i for i, cell in enumerate(code_cells) if cell.get("execution_count") is None]
    assert not unexecuted, (f"{path.name}: code cells {unexecuted} have no outputs; commit the "
                            "chapter executed (nbval only compares executed cells)")
    errors = [i for i, cell in enumerate(code_cells)
              if any(out["output_type"] == "error" for out in cell.get("outputs", []))]
    assert not errors, f"{path.name}: code cells {errors} store an error output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_stores_no_machine_path(path):
    notebook = json.loads(path.read_text())
    texts = [_source(cell) for cell in notebook["cells"]]
    texts += [_text_outputs(cell) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    metadata = {key: value for key, value in notebook["metadata"].items() if key != "widgets"}
    texts.append(json.dumps(metadata))
    text = "\n".join(texts)
    machine = {str(ROOT), str(Path.home()), sys.prefix}
    found = [m for m in machine if len(m) > 1 and m in text]
    found += re.findall(r"(?:/home/\w|/Users/\w|/root/|/tmp/|/work/|site-packages|[A-Z]:\\\\)",
                        text)
    assert not found, f"{path.name} stores absolute paths of a machine: {sorted(set(found))}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_stays_light(path):
    size = path.stat().st_size
    assert size < MAX_NOTEBOOK_BYTES, (f"{path.name} is {size / 1e6:.2f} MB; keep figures small "
                                       "(dpi ~72) and widget state lean")


FIRST_CELL = ROOT / "book" / "_templates" / "first_cell.py"


def test_first_cell_template_uses_the_configured_repository():
    template = FIRST_CELL.read_text()
    match = re.search(r'^REPOSITORY_URL = "([^"]+)"', template, re.MULTILINE)
    assert match, f"{FIRST_CELL.name} must set REPOSITORY_URL"
    assert match.group(1) == CONFIG["repository"]["url"], (
        f"{FIRST_CELL.name}: REPOSITORY_URL {match.group(1)!r} differs from _config.yml's "
        f"repository.url {CONFIG['repository']['url']!r}; set both to the public address")
    assert 'find_spec("glancing") is None' in template  # installs only when missing
    assert '"clone", "--quiet", "--depth", "1", REPOSITORY_URL' in template
    assert "setup(seed=" in template  # profile, data root, device, seeds


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_starts_with_the_shared_first_cell(path):
    cell = _cells(path)[0]
    assert "hide-input" in cell.get("metadata", {}).get("tags", []), (
        f"{path.name}: tag its first cell 'hide-input' (the set-up is the same on every page)")
    first = _source(cell).strip()
    assert first == FIRST_CELL.read_text().strip(), (
        f"{path.name}: its first code cell differs from book/_templates/first_cell.py; "
        "copy the template into it (one setup for every chapter)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_checks_some_outputs_with_nbval(path):
    checked = [cell for cell in _cells(path) if "# NBVAL_CHECK_OUTPUT" in _source(cell)]
    assert checked, f"{path.name}: mark its deterministic cells with # NBVAL_CHECK_OUTPUT"
    assert all(cell.get("outputs") for cell in checked)


def test_config_builds_offline_and_strictly():
    execute = CONFIG["execute"]
    assert execute["execute_notebooks"] == "force"  # "cache" keeps stale outputs
    assert execute["timeout"] >= 300
    sphinx = CONFIG["sphinx"]["config"]
    assert sphinx["nb_execution_raise_on_error"] is True
    # Math and widgets are served by the book itself: no URL may point elsewhere.
    local = [sphinx["mathjax_path"], *sphinx["nb_ipywidgets_js"]]
    assert not [path for path in local if "://" in path or path.startswith("//")]
    for hidden in (".*", "_build", ".venv"):
        assert hidden in CONFIG["exclude_patterns"]
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["bibtex_bibfiles"] == ["book/references.bib"]
    assert (ROOT / "book" / "references.bib").is_file()
