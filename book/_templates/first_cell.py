# Setup. On Colab (or wherever glancing is missing) this clones the repository, for the library
# and the book's committed results, and installs it. REPOSITORY_URL must equal `repository.url`
# in _config.yml (tests/test_book.py checks it). Settings come from the environment:
# GLANCING_PROFILE (ci | quick | gpu), GLANCING_DATA_ROOT (Magnetic Tile, MVTec AD).
REPOSITORY_URL = "https://github.com/OWNER/glancing"

import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("glancing") is None:
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", REPOSITORY_URL, "glancing"],
                   check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "glancing"],
                   check=True)
    sys.path.insert(0, os.path.abspath("glancing"))  # this kernel predates the install
    os.chdir("glancing/book")

from glancing.notebook import setup

BOOK = setup(seed=0)
