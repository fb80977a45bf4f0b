"""The published layouts of datasets, one module a format (see :mod:`matcher.ingest.presets` for the registry)."""
