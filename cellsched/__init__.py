"""cellsched: a shared-state, optimistic cluster scheduler in the style of Google's Omega."""

__version__ = "0.1.0"
