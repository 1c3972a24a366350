"""cellsched: a shared-state, optimistic cluster scheduler in the style of Google's Omega.

The layers are the subpackages (``cellsched.cellstate``, ``gpu``, ``schedulers``, ``api``,
``loadtests``); this root re-exports nothing from them, so importing one layer never loads
the others or the composition root (``cellsched.cli``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
