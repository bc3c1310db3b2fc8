# The two commands of the README: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.swinbob-installed
# The CPU build of this exact version lies on disk on our machines; an unpinned torch would pull GBs of CUDA wheels.
TORCH_PIN ?= torch==2.13.0
EXTRAS ?= test,train,distributed,slicer,dicom,web
DEMO_OUT ?= demo-output

.PHONY: demo test venv clean docs-pictures

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "Using the torch already installed for $(PYTHON) (venv with system site-packages)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/swinbob demo -o $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q Testing/Python

# Refreshes docs/slicer_render.png (the tests write only into temporary folders).
docs-pictures: $(STAMP)
	$(PY) benchmarks/render_slicer_docs.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
