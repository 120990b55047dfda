# Fresh-machine entry points: `make demo` (set up + run the main job), `make test`.
# The CPU wheel of torch is installed first so that pip never pulls a multi-GB CUDA build;
# for a GPU install see README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
# idle OpenMP threads sleep rather than spin: keeps torch fast when the CPU is shared
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test test-all lint mutants clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meer demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu"

# Mutation testing of the core modules (minutes to hours; not part of `make test`). One worker at
# the lowest priority; MUTANTS narrows the run to some mutants, e.g. MUTANTS='meer.losses.*'.
# The per-module kill rates are printed at the end; docs/testing.md explains them.
MUTANTS ?= $(CORE_MUTANTS)
CORE_MUTANTS := meer.losses.* meer.models.layers.* meer.models.heads.* meer.models.generator.x_composite* \
	meer.models.generator.xǁUpBlockǁforward* meer.models.generator.xǁUnmaskGeneratorǁforward* \
	meer.models.generator.x_blend_weights* meer.models.generator.x_create_generator* \
	meer.models.generator.xǁGatedConvǁforward* meer.models.generator.xǁGatedUpBlockǁforward* \
	meer.models.generator.xǁGatedGeneratorǁforward* \
	meer.models.decouple.xǁMaskDecouplingǁforward* meer.models.decouple.xǁMaskDecouplingǁstart_closed* \
	meer.models.meer.xǁMEERǁforward* meer.models.meer.xǁMEERǁembed* meer.models.meer.xǁMEERǁunmask* \
	meer.models.meer.xǁMEERǁocclusion_probability* meer.models.meer.x_build_model* \
	meer.train.objectives.* meer.inference.checkpoint.* meer.calibration.* meer.eval.verification.* \
	meer.train.trainer.x_build_nets* meer.train.trainer.x_lr_lambda* meer.train.trainer.xǁTrainerǁset_trainable* \
	meer.train.trainer.xǁTrainerǁbuild_stage* meer.train.trainer.xǁTrainerǁrestore* \
	meer.train.trainer.xǁTrainerǁload_optimisation_state* \
	meer.api.model.xǁFaceModelǁverify* meer.api.model.xǁFaceModelǁunmask* meer.api.model.xǁFaceModelǁidentify* \
	meer.api.model.xǁFaceModelǁthreshold_for* meer.api.model.xǁFaceModelǁmask_verdicts* \
	meer.web.app.xǁ_Serviceǁread_form* meer.web.app.xǁ_Serviceǁface*
mutants: $(STAMP)
	nice -n 19 $(BIN)/mutmut run --max-children 1 $(MUTANTS)
	$(BIN)/python scripts/mutation_report.py $(MUTANTS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache mutants
