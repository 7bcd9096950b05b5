"""The small shared kernel: settings, model store, versions, logging, message shapes."""
