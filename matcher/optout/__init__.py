"""The opt-out registry by content: registered photos' codes, checking manifests and indexes against it."""
