# The Kaggle round trip (issue 5), included by the Makefile: data download, submissions, the series as a Kaggle kernel.
# Uses PY and the venv target from the Makefile. Every request goes through tools/kaggle/api.py (kagglesdk).

FILE ?=
MSG ?=
FORCE ?=
NB ?= 03_xception
KERNEL_ID ?=
INTERNET ?=
ACCELERATOR ?= gpu
KERNEL_DIR ?=
WEIGHTS ?=
SUBMIT ?=
TIMEOUT ?= 13h
POLL ?= 60
# The Kaggle dataset of ImageNet weights: owner/slug (default <your user>/sf-dl-cars-keras-weights), `none` for no dataset.
WEIGHTS_DATASET ?=
# Where `make kaggle-weights` stages the upload (default build/kaggle-weights); the tests stage elsewhere.
WEIGHTS_STAGE_DIR ?=

# Single quotes around MSG, with any quote inside it escaped for the shell.
kaggle_msg = $(if $(MSG),--message '$(subst ','\'',$(MSG))')
kaggle_force = $(if $(filter 1 yes true,$(FORCE)),--force)
kaggle_id = $(if $(KERNEL_ID),--id $(KERNEL_ID))
kaggle_data_dir = $(if $(DATA_DIR),--data-dir $(DATA_DIR))
# The kernel's build folder (default build/kaggle-kernel); the tests build elsewhere to leave the checkout alone.
kaggle_out = $(if $(KERNEL_DIR),--out $(KERNEL_DIR))
kaggle_weights_dataset = $(if $(WEIGHTS_DATASET),--weights-dataset $(WEIGHTS_DATASET))

kaggle_weights = $(if $(filter 1 yes true,$(WEIGHTS)),--weights)

.PHONY: data submit submissions kaggle-kernel kaggle-push kaggle-status kaggle-output kaggle-run-all

data: | venv ## Download the competition files into data/ with the Kaggle API, unpack and verify them (once)
	@$(PY) -m tools.kaggle.download --data-dir data

submit: | venv ## Validate FILE= (default submissions/submission.csv) and upload it to Kaggle; MSG= message, FORCE=1 for demo data
	@$(PY) -m tools.kaggle.submit $(if $(FILE),--file $(FILE)) $(kaggle_msg) $(kaggle_force) $(kaggle_data_dir)

submissions: | venv ## List your Kaggle submissions with scores; keeps the history in submissions/leaderboard.csv
	@$(PY) -m tools.kaggle.submit list

kaggle-kernel: | venv ## Build build/kaggle-kernel/ (notebook NB=03_xception with lib bundled; KERNEL_ID=user/slug, INTERNET=1, ACCELERATOR=gpu|tpu|none, WEIGHTS_DATASET=owner/slug|none)
	@$(PY) -m tools.kaggle.kernel build --notebook $(NB) $(kaggle_id) $(if $(filter 1 yes true,$(INTERNET)),--internet) \
		--accelerator $(ACCELERATOR) $(kaggle_out) $(kaggle_weights_dataset)

kaggle-push: kaggle-kernel | venv ## Build and push the kernel to Kaggle, which runs it ("Save & Run") and writes submission.csv
	@$(PY) -m tools.kaggle.kernel push $(kaggle_out)

kaggle-status: | venv ## Show the pushed kernel's run status on Kaggle
	@$(PY) -m tools.kaggle.kernel status $(kaggle_id) $(kaggle_out)

kaggle-output: | venv ## Download the kernel's outputs into runs/kaggle/<slug>/, weights only with WEIGHTS=1 (then: make submit FILE=...)
	@$(PY) -m tools.kaggle.kernel output $(kaggle_id) $(kaggle_out) $(kaggle_weights)

kaggle-run-all: | venv ## The series on Kaggle: push the model runs (03, 03_convnext, 04), wait (TIMEOUT=13h), push 05 on their outputs, fetch; SUBMIT=1 uploads
	@$(PY) -m tools.kaggle.series --accelerator $(ACCELERATOR) --timeout $(TIMEOUT) --poll $(POLL) \
		$(if $(filter 1 yes true,$(INTERNET)),--internet) $(kaggle_weights) $(if $(filter 1 yes true,$(SUBMIT)),--submit) \
		$(kaggle_msg) $(kaggle_data_dir) $(kaggle_weights_dataset) $(if $(KERNEL_DIR),--build-root $(KERNEL_DIR))

.PHONY: weights kaggle-weights

weights: | venv ## Download the ImageNet weights of every backbone the notebooks use into $KERAS_HOME/models (needs internet)
	@$(PY) -m tools.kaggle.weights download

kaggle-weights: | venv ## Upload those weights once as your private Kaggle dataset (WEIGHTS_DATASET=owner/slug, default <you>/sf-dl-cars-keras-weights)
	@$(PY) -m tools.kaggle.weights upload $(if $(WEIGHTS_DATASET),--dataset $(WEIGHTS_DATASET)) $(kaggle_msg) \
		$(if $(WEIGHTS_STAGE_DIR),--out $(WEIGHTS_STAGE_DIR))
