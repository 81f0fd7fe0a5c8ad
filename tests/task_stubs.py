"""A base for the small hand-made tasks that tests hand to the real Trainer (imported by test
modules and by ddp_worker.py, which torchrun starts as a script from this folder)."""

from __future__ import annotations

from typing import Any


class NoEvalNoStateTask:
    """The parts of the Trainer's Task protocol that a test task leaves empty: no evaluation
    figures and no state of its own to save or restore."""

    def evaluate(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
