"""Training-health instruments: results, progress, images trained, memory.

Everything here is recorded at epoch ends or read at collection, never on a batch's path. The
process's resident memory and NVML's GPU readings are sampled when a reader collects; on a machine
without a GPU (or without ``nvidia-ml-py``) their series are absent, not zero.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from typing import Any

from opentelemetry.metrics import Meter

from .. import semconv as sc
from .histograms import NO_CONTEXT


class HealthInstruments:
    def __init__(self, meter: Meter) -> None:
        self.result = meter.create_gauge(
            sc.METRIC_RESULT,
            description="An epoch's losses, learning rates, metrics and fitness, by name",
        )
        self.non_finite = meter.create_gauge(
            sc.METRIC_RESULT_NON_FINITE, description="1 while a result's latest value is NaN or Inf"
        )
        self._non_finite: set[tuple[str, str]] = set()  # (name, mode) whose gauge says 1
        self.epochs_completed = meter.create_gauge(
            sc.METRIC_EPOCHS_COMPLETED, unit="{epoch}", description="Epochs the training has completed"
        )
        self.epochs_planned = meter.create_gauge(
            sc.METRIC_EPOCHS_PLANNED, unit="{epoch}", description="Epochs the training plans (epochs=)"
        )
        self.images = meter.create_counter(
            sc.METRIC_IMAGES, unit="{image}", description="Training images passed through the model"
        )
        self.time_share = meter.create_gauge(
            sc.METRIC_TIME_SHARE, description="Each cause's share of the training's last epoch"
        )
        self.bound = meter.create_gauge(
            sc.METRIC_BOUND, description="1 for what bound the training's last epoch, 0 otherwise"
        )
        self.since_progress = meter.create_gauge(
            sc.METRIC_SINCE_PROGRESS, unit="s", description="Seconds since an open training last moved"
        )
        self.gpu_peak = {
            kind: meter.create_gauge(
                name,
                unit="By",
                description=f"Peak GPU memory {kind} by PyTorch since the process started",
            )
            for kind, name in (
                ("allocated", sc.METRIC_GPU_PEAK_ALLOCATED),
                ("reserved", sc.METRIC_GPU_PEAK_RESERVED),
            )
        }
        # Read at collection (sample()) into synchronous gauges: an observable gauge's observations get
        # exemplars without a span in SDK 1.28, which its OTLP encoder cannot write.
        self._process = _process()
        self.resident = meter.create_gauge(
            sc.METRIC_PROCESS_MEMORY, unit="By", description="The process's resident (physical) memory"
        )
        self._gpus = _nvml_devices()
        self.gpu_utilization = meter.create_gauge(
            sc.METRIC_GPU_UTILIZATION, unit="1", description="Share of time the GPU ran a kernel (NVML)"
        )
        self.gpu_memory = meter.create_gauge(
            sc.METRIC_GPU_MEMORY_USAGE, unit="By", description="GPU memory in use, all processes (NVML)"
        )

    def sample(self) -> None:
        """At each collection: the resident memory and NVML's readings (absent where unreadable)."""
        if self._process is not None:
            with contextlib.suppress(Exception):  # the process table unreadable: no sample this time
                self.resident.set(self._process.memory_info().rss, {}, context=NO_CONTEXT)
        if not self._gpus:
            return
        import pynvml

        for handle, attributes in self._gpus:
            with contextlib.suppress(Exception):
                utilization = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100
                self.gpu_utilization.set(utilization, attributes, context=NO_CONTEXT)
                self.gpu_memory.set(
                    pynvml.nvmlDeviceGetMemoryInfo(handle).used, attributes, context=NO_CONTEXT
                )

    def record_results(self, results: dict[str, float], mode: str) -> None:
        """Ultralytics' own keys (``train/box_loss``, ``lr/pg0``, ``metrics/mAP50-95(B)``, ``fitness``).

        OpenTelemetry's SDK drops a NaN or Inf measurement (with a warning), so a result that is not
        finite sets its ``non_finite`` gauge to 1 instead (0 again once it is finite) and its value
        gauge keeps the last finite value."""
        for name, value in results.items():
            attributes = {sc.ATTR_RESULT_NAME: name, sc.ATTR_MODE: mode}
            key = (name, mode)
            if math.isfinite(value):
                self.result.set(value, attributes, context=NO_CONTEXT)
                if key in self._non_finite:
                    self._non_finite.discard(key)
                    self.non_finite.set(0, attributes, context=NO_CONTEXT)
            else:
                self._non_finite.add(key)
                self.non_finite.set(1, attributes, context=NO_CONTEXT)

    def record_progress(self, completed: int, planned: Any) -> None:
        attributes = {sc.ATTR_MODE: sc.MODE_TRAIN}
        self.epochs_completed.set(completed, attributes, context=NO_CONTEXT)
        if isinstance(planned, int):
            self.epochs_planned.set(planned, attributes, context=NO_CONTEXT)

    def record_gpu_memory(self, device: Any) -> None:
        """PyTorch's peak allocated and reserved memory on a CUDA device (its peaks are never reset:
        the application's own reading of them stays what it would be)."""
        torch = sys.modules.get("torch")  # a CUDA device: the training imported it
        if getattr(device, "type", None) != "cuda" or torch is None or not torch.cuda.is_available():
            return
        index = device.index if device.index is not None else torch.cuda.current_device()
        attributes = {sc.ATTR_HW_ID: f"cuda:{index}"}
        self.gpu_peak["allocated"].set(torch.cuda.max_memory_allocated(index), attributes, context=NO_CONTEXT)
        self.gpu_peak["reserved"].set(torch.cuda.max_memory_reserved(index), attributes, context=NO_CONTEXT)


@functools.cache  # once a process: every telemetry (a Ray worker's each trial) shares it
def _process() -> Any:
    try:
        import psutil

        return psutil.Process()
    except Exception:  # psutil comes with Ultralytics; without it, no resident memory series
        return None


@functools.cache  # nvmlInit once a process
def _nvml_devices() -> list[tuple[Any, dict[str, str]]]:
    """Each GPU NVML sees, with its ``hw.id`` (the GPU's UUID) and ``hw.name``; none without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid, name = pynvml.nvmlDeviceGetUUID(handle), pynvml.nvmlDeviceGetName(handle)
            devices.append((handle, {sc.ATTR_HW_ID: _text(uuid), sc.ATTR_HW_NAME: _text(name)}))
        return devices
    except Exception:  # no nvidia-ml-py, no driver, no GPU
        return []


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
