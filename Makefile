# vjepa-jax: `make test` and `make demo` set up everything they need on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.py requirements.txt | sha256sum | cut -c1-12)
DEMO_WORKDIR ?= demo_workdir
SIM_WORKDIR ?= sim_workdir
SIM_EPISODES ?= 100

.PHONY: test demo sim-demo venv shellcheck clean

venv: $(STAMP)

$(STAMP): setup.py requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,sim]'
	rm -f $(VENV)/.installed-* && touch $@

# The launch-script tests lint every script with shellcheck.
shellcheck:
	@command -v shellcheck >/dev/null 2>&1 || { \
	  echo "installing shellcheck"; \
	  (apt-get update -qq && apt-get install -y -qq shellcheck) >/dev/null 2>&1 || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq shellcheck) >/dev/null 2>&1 || \
	  echo "could not install shellcheck: the launch-script lint test will fail"; }

# Test files run in parallel, one file per worker (most tests are single-threaded XLA compiles,
# and a file's tests share module fixtures); `pytest tests/test_x.py` alone stays serial.
TEST_WORKERS ?= 2
test: $(STAMP) shellcheck
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: $(STAMP)
	test -f $(DEMO_WORKDIR)/sample/droid/1.0.0/dataset_info.json || \
	  $(PY) -m vjepa_jax.data.synthetic --out $(DEMO_WORKDIR)/sample/droid/1.0.0 --episodes 24 --image-size 90x160
	$(PY) -m vjepa_jax.main --config configs/demo.py --workdir $(DEMO_WORKDIR)/run \
	  --config.data.path=$(DEMO_WORKDIR)/sample/droid/1.0.0

# Collect scripted reach episodes in simulation, fine-tune the demo-sized world model on them,
# then plan in closed loop (random actions as the reference).
sim-demo: $(STAMP)
	test -f $(SIM_WORKDIR)/reach_data/dataset_info.json || \
	  $(PY) -m vjepa_jax.sim.collect --task reach --episodes $(SIM_EPISODES) --workers 2 \
	    --out $(SIM_WORKDIR)/reach_data
	$(PY) -m vjepa_jax.main --config configs/sim_franka.py --workdir $(SIM_WORKDIR)/run \
	  --config.data.path=$(SIM_WORKDIR)/reach_data
	$(PY) -m vjepa_jax.sim.evaluate --task reach --episodes 50 --planner random \
	  --out $(SIM_WORKDIR)/eval/random
	$(PY) -m vjepa_jax.sim.evaluate --task reach --episodes 50 --planner cem \
	  --workdir $(SIM_WORKDIR)/run --samples 200 --iterations 4 --out $(SIM_WORKDIR)/eval/cem

clean:
	rm -rf $(VENV) $(DEMO_WORKDIR) $(SIM_WORKDIR)
