"""What differs between the ends of the supported Ultralytics range (8.3.253 and the newest 8.4), as the
end-to-end tests see it; what the phase machine does about it is in otel_callbacks/tracing/outcomes.py."""

from __future__ import annotations

from ultralytics import __version__ as ULTRALYTICS_VERSION

ULTRALYTICS_8_4 = tuple(int(p) for p in ULTRALYTICS_VERSION.split(".")[:2]) >= (8, 4)
# Ultralytics' own integrations on a trainer with default SETTINGS, as otel_callbacks labels them.
ULTRALYTICS_INTEGRATIONS = {"events", "platform"} if ULTRALYTICS_8_4 else {"hub"}
# 8.3 fires teardown only after a successful training (8.4: in a finally).
TEARDOWN_AFTER_A_CRASH = ULTRALYTICS_8_4
