"""Set the repository's public address everywhere it is used: ``make repository URL=...``.

The address lives in ``_config.yml`` (``repository.url``, read by the launch buttons) and in the
first cell of every chapter (which clones it on Colab). This writes the new address into
``_config.yml`` and ``book/_templates/first_cell.py``, then copies the template into the first
code cell of every chapter, keeping the cells' outputs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "_config.yml"
TEMPLATE = ROOT / "book" / "_templates" / "first_cell.py"
ADDRESS = re.compile(r"^https://[\w.-]+/[\w.-]+/[\w.-]+$")


def main(url: str) -> int:
    if not ADDRESS.match(url):
        print(f"set_repository: {url!r} is not an address like https://github.com/OWNER/glancing",
              file=sys.stderr)
        return 2
    config = CONFIG.read_text()
    config, count = re.subn(r"^(  url: )\S+", rf"\g<1>{url}", config, count=1, flags=re.M)
    if count != 1:
        print(f"set_repository: no 'repository.url' line in {CONFIG}", file=sys.stderr)
        return 2
    template = re.sub(r'^REPOSITORY_URL = "[^"]*"', f'REPOSITORY_URL = "{url}"',
                      TEMPLATE.read_text(), count=1, flags=re.M)
    CONFIG.write_text(config)
    TEMPLATE.write_text(template)
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        first = next(cell for cell in notebook.cells if cell.cell_type == "code")
        first.source = template.strip()
        nbformat.write(notebook, path)
        print(f"updated {path.relative_to(ROOT)}")
    print(f"repository.url = {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
