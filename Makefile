# Two entry points, both for a fresh Debian/Ubuntu machine, run as root (the lab needs
# mounts and network namespaces): `make demo` and `make test`. Each installs what it
# needs: the lab's system packages and a virtualenv in .venv. `make unit` is the
# developer's loop: every test that needs no host, as any user, with no apt, in seconds.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB_PACKAGES := debootstrap systemd-container tinyproxy iproute2 openssh-client python3-venv shellcheck curl openssl pebble pass gnupg

.PHONY: demo test unit lint lab-deps settings-doc clean

$(BIN)/fab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

lab-deps:
	@missing=$$(for p in $(LAB_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing lab packages: $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The main job: a lab host, provisioned and deployed with the bundled sample app.
demo: lab-deps $(BIN)/fab
	@target=$$($(BIN)/fab lab.up --count 1 | awk '/ root@/ {print $$2; exit}'); \
	$(BIN)/fab -H $$target provision deploy && echo "Site: http://$${target#root@}/"

lint: lab-deps $(BIN)/fab
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	shellcheck -s sh deploy/remote/*.sh tests/run.sh

# two processes: the tests that need no host are independent, and one process took
# 36-39 s on two cores (most of it fab's start in subprocesses), two take 26-28 s
unit: $(BIN)/fab
	$(BIN)/pytest -q -m "not lab" -p no:cacheprovider -n 2

test: lab-deps lint
	tests/run.sh

settings-doc: $(BIN)/fab
	$(BIN)/python -m deploy.docs

clean:
	-$(BIN)/fab lab.down
	rm -rf $(VENV)
