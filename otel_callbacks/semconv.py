"""The telemetry contract: every span, metric and attribute name, in one place.

Dashboards, alert rules and tests import these names (or match their Prometheus spelling,
``.`` -> ``_``), so renaming one here is a breaking change for all of them.
"""

from __future__ import annotations

TRACER_NAME = "otel_callbacks"
METER_NAME = "otel_callbacks"
LOGGER_NAME = "otel_callbacks"

# Attribute keys (spans and metrics share them, as OpenTelemetry semantic conventions do).
ATTR_EVENT = "ultralytics.event"
ATTR_CALLBACK = "code.function.name"
ATTR_INTEGRATION = "ultralytics.integration"
ATTR_MODE = "ultralytics.mode"
ATTR_EPOCH = "ultralytics.epoch"
ATTR_BATCH_INDEX = "ultralytics.batch.index"  # spans only: unbounded cardinality
ATTR_PHASE = "ultralytics.phase"
ATTR_ERROR_TYPE = "error.type"
# Distributed (DDP) training: on the resource, root spans and the launcher's span.
ATTR_RANK = "ultralytics.rank"
ATTR_LOCAL_RANK = "ultralytics.local_rank"
ATTR_WORLD_SIZE = "ultralytics.world_size"
ATTR_DEVICES = "ultralytics.devices"
ATTR_EXIT_CODE = "process.exit.code"
ATTR_LAUNCHER = "ultralytics.ddp.launcher"  # true on the launching process's span around the workers
# Phase spans: seconds of the phase that none of its child spans covers (time no hook bounds).
ATTR_UNTRACED = "ultralytics.untraced_s"
# How a training ended other than by finishing its planned epochs (tracing/outcomes.py).
ATTR_RESTART_REASON = "ultralytics.restart.reason"  # an epoch restart's: RESTART_* (spans, metric)
ATTR_STOP_REASON = "ultralytics.stop.reason"  # the root's, when it stopped early: STOP_*
ATTR_EPOCHS_COMPLETED = "ultralytics.epochs.completed"  # the root's: the last epoch that ended
ATTR_MESSAGE = "message"  # the words of a restart or early stop event
# Sweeps (model.tune(), Ray Tune, MultiTrainer) and resumed runs (ultralytics/sweeps.py, raytune.py).
ATTR_TUNE_ITERATIONS = "ultralytics.tune.iterations"  # the tune root's: iterations (trials) planned
ATTR_TUNE_SPACE = "ultralytics.tune.space"  # the tune root's: the search space's keys
ATTR_TUNE_ITERATION = "ultralytics.tune.iteration"  # an iteration's number, from 1
ATTR_TUNE_BEST_ITERATION = "ultralytics.tune.best_iteration"  # the tune root's, and a link to that span
ATTR_TUNE_BEST_FITNESS = "ultralytics.tune.best_fitness"
ATTR_TUNE_METRIC = "ultralytics.tune.metric"  # the tune root's: the result its sweep ranks by
ATTR_TUNE_BEST_TRIAL = "ultralytics.tune.best_trial_id"  # a Ray Tune root's: by the task's main metric
ATTR_TRIAL_ID = "ultralytics.tune.trial_id"  # a Ray Tune trial's: on its span and its worker's resource
ATTR_TRIAL_STATUS = "ultralytics.tune.trial.status"  # TRIAL_*: how a trial ended
ATTR_DATASETS = "ultralytics.datasets"  # a MultiTrainer's: the datasets' file names, in order
ATTR_FAILED_DATASETS = "ultralytics.datasets.failed"
ATTR_RESUME_EPOCH = "ultralytics.resume.epoch"  # a resumed run's root: the first epoch it trains
ATTR_RESUME_TRACE_ID = "ultralytics.resume.trace_id"  # and the trace it continues (also a span link)
HYPERPARAMETER_PREFIX = "ultralytics.hyp."  # an iteration's or trial's hyperparameters: + its key
# The record of a long phase still open, exported soon after it opens (a backend shows it while the
# phase runs): a span of its own id, the phase's child, 1 ns long from the phase's start, named as the
# phase with OPEN_SUFFIX (a zero-length row once the phase has come too). Where the phase's span came,
# the file's readers drop the record; where none came (SIGKILL), `send` and `report` make it that span,
# with the phase's name, id and parent (the hex id in ATTR_OPEN_PARENT; "" for a root), ERROR with
# UNCLOSED (telemetry/otlp_file.py).
ATTR_OPEN = "otel_callbacks.open"
ATTR_OPEN_PARENT = "otel_callbacks.open.parent_span_id"
OPEN_SUFFIX = " (in progress)"
UNCLOSED = "the process ended without closing this phase"
# A run's root: seconds otel_callbacks spent around its callbacks (the timing table's overhead line).
ATTR_OVERHEAD = "otel_callbacks.overhead_s"

# Values of ATTR_INTEGRATION that are not an integration's own name.
INTEGRATION_DEFAULT = "default"
INTEGRATION_USER = "user"

# Modules whose callbacks are the framework's defaults rather than an integration's.
_DEFAULT_MODULES = ("otel_callbacks.hooks", "ultralytics.utils.callbacks.base")
_ULTRALYTICS_CALLBACKS = "ultralytics.utils.callbacks."
_RENAMED = {"wb": "wandb"}


def integration_of_module(module: str) -> str:
    """The ATTR_INTEGRATION value of a callback defined in ``module``:
    ``ultralytics.utils.callbacks.tensorboard`` -> ``tensorboard``; unknown modules -> ``user``."""
    if module in _DEFAULT_MODULES:
        return INTEGRATION_DEFAULT
    if module.startswith(_ULTRALYTICS_CALLBACKS):
        name = module[len(_ULTRALYTICS_CALLBACKS) :].split(".")[0]
        return _RENAMED.get(name, name)
    if module == "ultralytics.utils.events":
        return "events"
    return INTEGRATION_USER


# Values of ATTR_MODE.
MODE_TRAIN = "train"
MODE_VAL = "val"
MODE_PREDICT = "predict"
MODE_EXPORT = "export"

# Metrics.
METRIC_CALLBACK_DURATION = "ultralytics.callback.duration"
METRIC_CALLBACK_SLOW = "ultralytics.callback.slow"
METRIC_PHASE_DURATION = "ultralytics.phase.duration"
METRIC_TELEMETRY_ERRORS = "otel_callbacks.telemetry.errors"
METRIC_EPOCH_RESTARTS = "ultralytics.epoch.restarts"  # by ATTR_RESTART_REASON and ATTR_MODE
# Training health (telemetry/health.py, tracing/health.py): at epoch ends or at collection.
METRIC_RESULT = "ultralytics.result"  # gauge by ATTR_RESULT_NAME and ATTR_MODE: a results.csv column
METRIC_RESULT_NON_FINITE = "ultralytics.result.non_finite"  # 1 while its latest value is NaN or Inf
METRIC_EPOCHS_COMPLETED = "ultralytics.train.epochs.completed"  # gauges: progress, and an ETA with
METRIC_EPOCHS_PLANNED = "ultralytics.train.epochs.planned"  # the epoch's duration
METRIC_IMAGES = "ultralytics.train.images"  # counter, brought up to date at each collection
# Gauge, seconds: since an open training last moved (a hook's firing ended, a batch started), at each
# collection; 0 once no training is open. A hung callback, dataloader or collective makes it grow.
METRIC_SINCE_PROGRESS = "ultralytics.train.since_progress"
# What bounds a training (tracing/verdicts.py), at each epoch's end: each cause's share of the epoch
# (gauge by ATTR_BOUND_BY), and 1 for the epoch's verdict, 0 for the other causes (a state set).
METRIC_TIME_SHARE = "ultralytics.train.time_share"
METRIC_BOUND = "ultralytics.train.bound"
ATTR_BOUND_BY = "ultralytics.bound_by"  # a BOUND_*; also on epoch spans and a training's root
ATTR_BOUND_SHARE = "ultralytics.bound_by.share"  # its cause's share of the epoch or training (spans)
ATTR_BOUND_REASON = "ultralytics.bound_by.reason"  # the verdict in words, with what to try (spans)
BOUND_INPUT, BOUND_COMPUTE, BOUND_CALLBACKS = "input", "compute", "callbacks"
BOUND_VALIDATION, BOUND_CHECKPOINT = "validation", "checkpoint"
METRIC_GPU_PEAK_ALLOCATED = "ultralytics.gpu.memory.peak_allocated"  # PyTorch's, by ATTR_HW_ID (cuda:N)
METRIC_GPU_PEAK_RESERVED = "ultralytics.gpu.memory.peak_reserved"
METRIC_PROCESS_MEMORY = "process.memory.usage"  # OpenTelemetry's process and hardware conventions
METRIC_GPU_UTILIZATION = "hw.gpu.utilization"  # NVML (nvidia-ml-py), by ATTR_HW_ID (the GPU's UUID)
METRIC_GPU_MEMORY_USAGE = "hw.gpu.memory.usage"
ATTR_RESULT_NAME = "ultralytics.result.name"  # Ultralytics' key: train/box_loss, lr/pg0, fitness
ATTR_HW_ID = "hw.id"
ATTR_HW_NAME = "hw.name"

# Values of ATTR_RESTART_REASON: why Ultralytics started an epoch again.
RESTART_OUT_OF_MEMORY = "out_of_memory"  # 8.4's OOM auto-retry: batch halved, first epoch again
RESTART_NAN = "nan_recovery"  # a non-finite loss or fitness: last.pt reloaded, the epoch redone
RESTART_OTHER = "other"  # the same epoch started again for a reason the trainer does not show
RESTART_REASONS = (RESTART_OUT_OF_MEMORY, RESTART_NAN, RESTART_OTHER)
# Values of ATTR_TRIAL_STATUS.
TRIAL_COMPLETED = "completed"
TRIAL_STOPPED = "stopped"  # by the scheduler (ASHA) or the sweep's end: not a failure
TRIAL_FAILED = "failed"
# Values of ATTR_STOP_REASON.
STOP_TIME_LIMIT = "time_limit"  # the time= argument (hours)
STOP_EARLY_STOPPING = "early_stopping"  # patience epochs without a better fitness
STOP_EXTERNAL = "stopped"  # trainer.stop set from outside (a callback, a platform's cancel)
STOP_EXIT = "exit"  # a clean exit left the training (SystemExit 0: sys.exit(), Ray Tune ending a trial)

# Explicit bucket boundaries in seconds, 100 us to 60 s, for every duration histogram.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# Phase span names; also the values of ATTR_PHASE on METRIC_PHASE_DURATION.
PHASE_TRAIN = "train"
PHASE_SETUP = "setup"
PHASE_EPOCH = "epoch"
PHASE_BATCH = "batch"
PHASE_DATALOADER = "dataloader"
PHASE_VAL = "val"
PHASE_FINAL_EVAL = "final_eval"
PHASE_PREDICT = "predict"
PHASE_PREDICT_BATCH = "predict_batch"
PHASE_EXPORT = "export"
PHASE_VAL_BATCH = "val_batch"
PHASE_TUNE = "tune"  # a whole sweep: model.tune(), with or without Ray
PHASE_ITERATION = "iteration"  # one of Ultralytics' Tuner iterations
PHASE_TRIAL = "trial"  # one Ray Tune trial
PHASE_MULTITRAIN = "multitrain"  # MultiTrainer: one base model trained on each of a list of datasets
# Gaps that two of the trainer's hooks bound, named by what Ultralytics 8.4's trainer does there.
PHASE_CLEAR_MEMORY = "clear_memory"  # EMA attributes and gc between an epoch's end and its val
PHASE_CHECKPOINT = "checkpoint"  # save_metrics and save_model (last.pt, best.pt) before on_model_save
PHASE_STRIP_OPTIMIZER = "strip_optimizer"  # last.pt and best.pt stripped before the final eval
PHASE_VAL_METRICS = "val_metrics"  # statistics after the last val batch, before on_val_end
PHASE_FINALIZE = "finalize"  # after the last on_fit_epoch_end: plots, before on_train_end
PHASE_CLEANUP = "cleanup"  # memory and dataloaders released after on_train_end, before teardown

# Results on the epoch and val spans: Ultralytics' own keys ("train/box_loss", "lr/pg0",
# "metrics/mAP50-95(B)", "fitness") as scalar attributes, by result_attribute().
RESULT_PREFIX = "ultralytics."


def result_attribute(key: str) -> str:
    """``metrics/mAP50-95(B)`` -> ``ultralytics.metrics.mAP50-95_B``; ``lr/pg0`` -> ``ultralytics.lr.pg0``."""
    name = key.strip().replace("/", ".").replace("(", "_").replace(")", "").replace(" ", "_")
    return RESULT_PREFIX + name


# An epoch's: the batch from which none of its batches got spans, its share of the span budget spent.
ATTR_SAMPLING_CUT_AT = "ultralytics.sampling.cut_at_batch"
ATTR_RUN_NAME = "ultralytics.run.name"  # a run's root: its save directory as project/name ("detect/train2")

# Attributes of the train span, from the trainer's args: scalars only, never the whole namespace;
# model and data keep only their file name (full paths can hold user names).
RUN_ATTRIBUTES = {
    "task": "ultralytics.task",
    "model": "ultralytics.model",
    "data": "ultralytics.data",
    "epochs": "ultralytics.epochs",
    "batch": "ultralytics.batch.size",
    "imgsz": "ultralytics.imgsz",
    "device": "ultralytics.device",
}

# Span events.
EVENT_SLOW_CALLBACK = "slow_callback"
ATTR_SLOW = "ultralytics.slow"  # true on a slow invocation's span (with its event): a tag to search by

# A call that hangs, or an engine stuck between two firings (a batch, a dataloader wait, a phase with
# no hooks), seen while it lasts (tracing/watchdog.py): a span from its start to the moment it was
# seen, in its phase, repeated with backoff.
SPAN_STALL = "stall"
ATTR_STALL_DURATION = "ultralytics.stall.duration_s"  # how long it had run then
ATTR_STALL_BOUND = "ultralytics.stall.bound_s"  # an engine's stall: the bound it ran past
ATTR_STALL_STACKS = "ultralytics.stall.stacks"  # every thread's stack, as faulthandler prints them
ATTR_THREAD_NAME = "thread.name"  # the hung call's thread (OpenTelemetry's attribute)
EVENT_EPOCH_RESTART = "epoch_restart"  # on the root, one per restarted epoch
EVENT_EARLY_STOP = "early_stop"  # on the root, when the training stopped before its planned epochs
