"""The directory a launcher puts first on its children's ``PYTHONPATH`` (``launch.py``): its
``sitecustomize`` installs otel_callbacks where ``OTEL_CALLBACKS_INSTALL`` is true."""
