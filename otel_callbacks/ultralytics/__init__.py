"""The Ultralytics adapter: ``dropin`` (install, uninstall), ``defaults`` (Ultralytics' own
functions and hooks) and ``integrations`` (add_integration_callbacks). Kept import-free so that
the registry can read the defaults without importing the drop-in that imports it."""
