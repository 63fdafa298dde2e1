"""fastlstm as a library threadpoolctl controls: ``threadpool_info()``
lists it and ``threadpool_limits(n)`` caps its threads (through
fastlstm.set_num_threads). threadpoolctl stays optional: without it (or
with a version that cannot register controllers) nothing happens."""

from __future__ import annotations

import ctypes
from typing import Any

from fastlstm import thread_budget

__all__ = ["register"]


def register() -> None:
    """Registers the controller with threadpoolctl, if it is installed."""
    try:
        import threadpoolctl
    except ImportError:
        return
    if not hasattr(threadpoolctl, "register") or hasattr(threadpoolctl, "_fastlstm"):
        return
    threadpoolctl.register(_controller_class(threadpoolctl.LibController))
    threadpoolctl._fastlstm = True  # once per process


def _controller_class(base: Any) -> type:
    class FastLSTMController(base):
        """Found as the loaded ``_core`` module exporting fl_version."""

        user_api = "fastlstm"
        internal_api = "fastlstm"
        filename_prefixes = ("_core",)
        check_symbols = ("fl_version",)

        def get_num_threads(self) -> int:
            return thread_budget.get_num_threads()

        def set_num_threads(self, num_threads: int) -> None:
            # threadpool_limits restores the number it read before: the
            # limit as it was (None for the automatic choice) comes back
            restore = getattr(self, "_restore", None)
            if restore is not None and num_threads == restore[1]:
                thread_budget.set_num_threads(restore[0])
                self._restore = None
                return
            n = max(1, min(int(num_threads), thread_budget.MAX_THREADS))
            self._restore = (thread_budget.explicit_limit(), self.get_num_threads())
            thread_budget.set_num_threads(n)

        def get_version(self) -> str | None:
            fn = getattr(self.dynlib, "fl_version", None)
            if fn is None:
                return None
            fn.restype = ctypes.c_char_p
            return fn().decode("ascii")

    return FastLSTMController
