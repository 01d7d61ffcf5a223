# The two commands of the README:  make test  and  make book.
# Each creates the virtual environment when it is missing and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The torch pair tested here; pyproject.toml keeps wide ranges for Colab.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
# Real image sets (Magnetic Tile, MVTec AD transistor) beside the checkout, when present.
DATA_ROOT ?= $(abspath $(wildcard ../shared/data))
# The book's chapters, checked cell by cell by nbval.
CHAPTERS := $(wildcard book/*.ipynb)
# How the chapters run when they are executed, tested and built: the ci profile (minutes on two
# cores) and no data root. Real-data numbers reach the pages through the committed results in
# book/results; the chapters' outputs (committed, and in the HTML) show only the embedded
# dataset, because the licences of MVTec AD and Magnetic Tile forbid redistributing their images.
BOOK_ENV := OMP_NUM_THREADS=1 GLANCING_PROFILE=ci GLANCING_DATA_ROOT=

# JavaScript the built pages load, served from the book itself so that they work offline:
# MathJax 3 (math), require.js and the jupyter-widgets HTML manager (widgets without a kernel).
# npm fetches the three packages once into an ignored folder; only the files the pages load are
# copied next to the book. Not into a folder named _static/: Jupyter Book 1 would add a <script>
# for every .js file in it. Changing a version here fetches and copies again.
MATHJAX_VERSION := 3.2.2
REQUIREJS_VERSION := 2.3.8
HTML_MANAGER_VERSION := 1.0.15
JS_VERSIONS := mathjax-$(MATHJAX_VERSION)_requirejs-$(REQUIREJS_VERSION)_html-manager-$(HTML_MANAGER_VERSION)
NPM_CACHE := .cache/npm
NPM_STAMP := $(NPM_CACHE)/.packed_$(JS_VERSIONS)
OFFLINE_JS := book/_assets/offline
# (the stamp's name changes with what is copied: TeX extensions such as \boldsymbol load on demand)
OFFLINE_STAMP := $(OFFLINE_JS)/.complete_$(JS_VERSIONS)_tex-extensions

# Headless Chromium for the browser test of the built book (Debian package).
CHROMIUM ?= /usr/bin/chromium

.PHONY: venv test lint pytest nbval browser-test chromium book chapters offline-js clean repository

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[test,book]"
	touch $(STAMP)

test: lint pytest nbval browser-test

lint: $(STAMP)
	$(PY) -m ruff check glancing tests tools
	$(PY) -m ruff check --select F,E9 $(CHAPTERS)

# One torch thread: on 2 shared cores, more threads are slower and unsteady.
# The browser test runs in browser-test, after the book is built.
pytest: $(STAMP)
	OMP_NUM_THREADS=1 GLANCING_DATA_ROOT="$(DATA_ROOT)" $(PY) -m pytest -m "not browser"

# The chapters run top to bottom; cells marked NBVAL_CHECK_OUTPUT must reproduce their outputs.
nbval: $(STAMP)
	$(BOOK_ENV) $(PY) -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-sanitize-with book/nbval_sanitize.cfg $(CHAPTERS)

# Re-run the chapters in place after editing them or the library: their outputs and widget state
# are committed (nbval compares them; Colab and GitHub show them).
chapters: $(STAMP)
	$(BOOK_ENV) $(PY) -c "$$EXECUTE_CHAPTERS" $(CHAPTERS)

define EXECUTE_CHAPTERS
import pathlib, sys
import nbformat
from nbclient import NotebookClient
for name in sys.argv[1:]:
    path = pathlib.Path(name)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(notebook, path)
    print(f"executed {path}")
endef
export EXECUTE_CHAPTERS

browser-test: book chromium
	OMP_NUM_THREADS=1 CHROMIUM="$(CHROMIUM)" $(PY) -m pytest -m browser tests/test_book_browser.py

chromium:
	@test -x "$(CHROMIUM)" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "The browser test needs Chromium at $(CHROMIUM): run 'sudo apt-get install -y chromium' (or pass CHROMIUM=/path/to/chromium)"; \
	    exit 1; \
	  fi; }

# --all: every page is read and its notebook executed again, so that library edits reach the
# pages (an incremental build would skip unchanged chapters and keep their old outputs).
book: $(STAMP) $(OFFLINE_STAMP)
	$(BOOK_ENV) $(VENV)/bin/jupyter-book build . --all -W -n --keep-going

offline-js: $(OFFLINE_STAMP)

$(NPM_STAMP):
	@command -v npm >/dev/null || { echo "make book needs npm once, to fetch MathJax, require.js and the widget manager: install Node.js and npm (e.g. 'apt-get install -y npm')"; exit 1; }
	mkdir -p $(NPM_CACHE)
	cd $(NPM_CACHE) && npm pack --silent mathjax@$(MATHJAX_VERSION) requirejs@$(REQUIREJS_VERSION) \
		@jupyter-widgets/html-manager@$(HTML_MANAGER_VERSION) >/dev/null
	touch $@

$(OFFLINE_STAMP): $(NPM_STAMP)
	rm -rf $(OFFLINE_JS) && mkdir -p $(OFFLINE_JS)/mathjax $(OFFLINE_JS)/requirejs $(OFFLINE_JS)/html-manager
	tar -xzf $(NPM_CACHE)/mathjax-$(MATHJAX_VERSION).tgz -C $(OFFLINE_JS)/mathjax --strip-components=2 \
		package/es5/tex-chtml.js package/es5/output/chtml/fonts/woff-v2 package/es5/input/tex/extensions
	tar -xzf $(NPM_CACHE)/mathjax-$(MATHJAX_VERSION).tgz -C $(OFFLINE_JS)/mathjax --strip-components=1 \
		package/LICENSE
	tar -xzf $(NPM_CACHE)/requirejs-$(REQUIREJS_VERSION).tgz -C $(OFFLINE_JS)/requirejs \
		--strip-components=1 package/require.js
	tar -xzf $(NPM_CACHE)/jupyter-widgets-html-manager-$(HTML_MANAGER_VERSION).tgz \
		-C $(OFFLINE_JS)/html-manager --strip-components=2 --wildcards \
		package/dist/embed-amd.js 'package/dist/*.woff2'
	touch $@

# The repository's public address, in _config.yml and every chapter's first cell:
#   make repository URL=https://github.com/OWNER/glancing
repository: $(STAMP)
	$(PY) tools/set_repository.py "$(URL)"

clean:
	rm -rf _build
