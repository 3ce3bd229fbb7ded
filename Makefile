# Robustness soak (docs/robustness.md): ROBUSTNESS_ROUNDS rounds cycling every fault case.
# The report table grows round by round in $(SOAK_DIR)/test_soak_<kind>_0/report.txt.
ROBUSTNESS_ROUNDS ?= 100
SOAK_DIR ?= /tmp/kv-soak
PYTHON ?= python

.PHONY: soak soak-etcd

soak:
	ROBUSTNESS_ROUNDS=$(ROBUSTNESS_ROUNDS) $(PYTHON) -m pytest -m soak -q -s --basetemp=$(SOAK_DIR) \
		"tests/robustness/test_robustness_soak.py::test_soak[kv]"

soak-etcd:
	ROBUSTNESS_ROUNDS=$(ROBUSTNESS_ROUNDS) $(PYTHON) -m pytest -m soak -q -s --basetemp=$(SOAK_DIR)-etcd \
		"tests/robustness/test_robustness_soak.py::test_soak[etcd]"
