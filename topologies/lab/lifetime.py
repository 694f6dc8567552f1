"""What a lab object started by a with-block shares: start on entry, stop on exit, and stop at
once when the start fails part-way, so that nothing it had begun is left running.
"""

from __future__ import annotations

from typing import Self


class StartStop:
    """Base of objects with ``start()`` and an idempotent ``stop()`` that also undoes a partial
    start; entering a with-block starts them, leaving it (however it ends) stops them."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> object:  # what a stop returns (a capture's exit status) is its own
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
