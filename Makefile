# mnist-lab: `make train` and `make test` set everything up on a fresh clone (venv, packages, MNIST).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8080
STAMP  := $(VENV)/.installed-stamp
LOGDIR ?= outputs
MODEL  ?= lenet
DIR    ?= multirun

.PHONY: install data train tune report dashboard notebook test bench lint format tensorboard clean slurm slurm-down postgres postgres-down ray-cluster ray-cluster-down gpu-check test-long

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,export,bench,dashboard,ray,postgres]'
	touch $@

install: $(STAMP)  ## create .venv and install the project with its dev tools and the export extra

data: install  ## fetch MNIST and Fashion-MNIST (md5-verified) into data/MNIST/raw, data/FashionMNIST/raw; write their pickles
	$(PY) -m mnist_lab.data.fetch

train: data  ## train the default model; pass overrides as ARGS="model=lenet_res trainer.epochs=3"
	$(PY) train.py $(ARGS)

tune: data  ## Optuna search with pruning: make tune MODEL=lenet (or lenet_res, resmlp) ARGS="tune.trials=40"
	$(PY) tune.py hparams_search=$(MODEL) $(ARGS)

report: install  ## leaderboard and plots of a sweep: make report DIR=multirun/<date>/<time>
	$(PY) report.py $(DIR)

dashboard: install  ## optuna-dashboard on a study: make dashboard STUDY=<study dir | database URL | journal file>
	@test -n "$(STUDY)" || { echo "usage: make dashboard STUDY=multirun/tune/lenet (or a database URL, or a journal file)" >&2; exit 2; }
	@if [ -d "$(STUDY)" ]; then storage="sqlite:///$(abspath $(STUDY))/study.db"; else storage="$(STUDY)"; fi; \
	echo "optuna-dashboard $$storage  (http://127.0.0.1:$(PORT))"; \
	$(VENV)/bin/optuna-dashboard --port $(PORT) "$$storage"

notebook: data  ## JupyterLab on examples/ in the project's own environment (installs the notebook extra once)
	test -x $(VENV)/bin/jupyter-lab || $(PY) -m pip install --quiet -e '.[notebook]'
	$(VENV)/bin/jupyter lab --notebook-dir=examples $(if $(filter 0,$(shell id -u)),--allow-root)  # Jupyter refuses root without it

# Two pytest-xdist workers, a test file each at a time (--dist loadfile: the torchrun tests, which share torchrun's
# default port, never run together); OMP_WAIT_POLICY=PASSIVE keeps torch's idle threads from spinning on a core
# that the other worker's process wants.
PYTEST_ARGS ?= -m "not long"
test: data  ## the test suite (real MNIST included) but the cases marked long; PYTEST_ARGS="-m 'not slow'" for the quick part
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-long: data  ## the cases marked long (15 s and more each), which make test leaves out; CI runs both
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -n 2 --dist loadfile -m long

gpu-check: data  ## the CUDA path in one command (~8 min on one GPU): the cuda tests, GPU epochs (fp32, bf16, compile modes, channels_last), the speedrun seeds 0-4; writes bench/results/gpu-<date>.json
	$(PY) -m bench.gpu_check

slurm:  ## start a SLURM cluster of two nodes (two slurmd) on this machine for hydra/launcher=slurm and the slurm tests (root)
	bash scripts/slurm.sh up

slurm-down:  ## stop the daemons `make slurm` started
	bash scripts/slurm.sh down

ray-cluster:  ## start a Ray cluster of two nodes on this machine's loopback (127.0.0.1:6390), for hydra.launcher.ray.init.address
	bash scripts/ray-cluster.sh up

ray-cluster-down:  ## stop the two nodes `make ray-cluster` started (nothing else of Ray's)
	bash scripts/ray-cluster.sh down

postgres:  ## start a PostgreSQL server on 127.0.0.1:5433 for shared Optuna studies and the postgres tests (root; data in /var/tmp)
	bash scripts/postgres.sh up

postgres-down:  ## stop the server `make postgres` started (its data stay)
	bash scripts/postgres.sh down

bench: data  ## throughput side by side with the classic pipeline, time to accuracy, the speedrun, per-run overhead, augmentation (~30 min on 2 cores)
	$(PY) -m bench.throughput
	$(PY) -m bench.time_to_accuracy
	$(PY) -m bench.time_to_accuracy --experiment speedrun
	$(PY) -m bench.overhead
	$(PY) -m bench.augment

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

tensorboard: install  ## open TensorBoard on LOGDIR (default outputs; multirun for sweeps); every per-step point kept
	$(VENV)/bin/tensorboard --logdir $(LOGDIR) --samples_per_plugin scalars=1000000

clean:  ## remove run outputs (not the data, not the venv)
	rm -rf outputs multirun
