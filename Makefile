# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install sslsweep, run the demo sweep (local Ray, CPU, digits)
#   make test   - create .venv, install sslsweep with test extras, run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STORAGE ?= runs

.PHONY: setup demo test smoke bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/sslsweep sweep experiment=demo storage=$(STORAGE)

smoke: setup
	$(VENV)/bin/sslsweep sweep experiment=smoke storage=$(STORAGE)

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
