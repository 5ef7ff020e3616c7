"""The resource of the providers otel_callbacks builds: which process the telemetry comes from."""

from __future__ import annotations

import socket
import sys
import uuid
from pathlib import Path

from opentelemetry.sdk.resources import (
    HOST_NAME,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_PID,
    PROCESS_RUNTIME_NAME,
    PROCESS_RUNTIME_VERSION,
    SERVICE_NAME,
    OTELResourceDetector,
    ProcessResourceDetector,
    Resource,
)

from ..config import process_ranks

# What the SDK's process detector finds that tells runs apart; never its command line or paths
# (arguments can hold secrets, paths user names).
_PROCESS_KEYS = (PROCESS_PID, PROCESS_RUNTIME_NAME, PROCESS_RUNTIME_VERSION)


def process_resource() -> Resource:
    """Each process its own instance (DDP ranks, repeated runs), its host, pid and executable, and its
    rank where it has one; OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win over these defaults."""
    detected = ProcessResourceDetector().detect().attributes
    defaults = {
        SERVICE_NAME: "ultralytics",
        "service.instance.id": str(uuid.uuid4()),
        HOST_NAME: socket.gethostname(),
        **{key: detected[key] for key in _PROCESS_KEYS if key in detected},
        PROCESS_EXECUTABLE_NAME: Path(sys.executable).name,  # older SDKs put the whole path there
        **process_ranks(),
    }
    from_environment = OTELResourceDetector().detect().attributes
    return Resource.create({k: v for k, v in defaults.items() if k not in from_environment})
