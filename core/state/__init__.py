"""State that outlives a run: the workspace, the caches, regime history, events.

Private: import the public API from ``botopt.core``."""
