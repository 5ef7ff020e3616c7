"""The resource of the providers otel_callbacks builds: which process the telemetry comes from."""

from __future__ import annotations

import uuid

from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource

from ..config import process_ranks


def process_resource() -> Resource:
    """Each process its own instance (DDP ranks, repeated runs), and its rank where it has one;
    OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win over these defaults."""
    defaults = {SERVICE_NAME: "ultralytics", "service.instance.id": str(uuid.uuid4()), **process_ranks()}
    from_environment = OTELResourceDetector().detect().attributes
    return Resource.create({k: v for k, v in defaults.items() if k not in from_environment})
