# flatarch: `sudo make testbed` opens the lab's CLI, `sudo make test` runs every test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOPOLOGY ?= topologies/figure2.yaml
FUZZ_COUNT ?= 1000000
FUZZ_JSON ?= results-fuzz.json
# Debian packages the lab runs: mnexec, FRR, BIND, Unbound, traffic and capture tools.
DEBS := mininet frr bind9 bind9-utils bind9-dnsutils unbound iperf3 iputils-ping \
        tcpdump nftables iproute2 traceroute procps kmod python3-venv busybox \
        isc-dhcp-client dnsmasq-base
# tshark decodes captures with docs/wireshark/flatarch.lua (tests/unit/test_dissector.py).
DEBS += tshark
DEBS += iptables

.PHONY: deps debs testbed test unit integration bench fuzz lint clean down

deps: debs $(STAMP)

debs:
	@missing=$$(for p in $(DEBS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,docker]'
	touch $@

testbed: deps
	$(VENV)/bin/flatarch up --cli --topology $(TOPOLOGY)

test: deps
	$(PY) -m pytest -q tests

unit: deps
	$(PY) -m pytest -q -m "not root" tests

integration: deps
	$(PY) -m pytest -q -m root tests

bench: deps
	$(VENV)/bin/flatarch bench auth --json results-bench-auth.json

fuzz: deps
	$(PY) -m agents.fuzz --count $(FUZZ_COUNT) --json $(FUZZ_JSON)

lint: deps
	$(VENV)/bin/ruff check topologies agents tests
	$(VENV)/bin/mypy

down: deps
	$(VENV)/bin/flatarch down

clean:
	-$(VENV)/bin/flatarch down 2>/dev/null
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
DEBS += tcpreplay
# The Kathará export on a local Docker (tests/integration/test_kathara_docker.py, part of
# `make test`): it starts its own dockerd and builds the node image with debootstrap. Without
# systemd or a runlevel, docker.io's postinst starts no dockerd (invoke-rc.d blocks it).
DEBS += docker.io debootstrap
.PHONY: docker-test
docker-test: deps
	$(PY) -m pytest -q tests/integration/test_kathara_docker.py
