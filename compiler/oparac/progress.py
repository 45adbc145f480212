"""Progress of a compile: the hook told when each stage starts and ends (with its time) and of notes inside one,
and the runner that reports every stage to it and names a failing stage with those before it."""
from __future__ import annotations

import time
from typing import Callable

from opara_plan import ModelError, OparaError


class Progress:
    """What compile() reports to. Every method does nothing: a hook overrides the ones it wants (as hidet's pass
    instruments do), and passes that report from inside a stage call note()."""

    def stage_started(self, stage: str, detail: str) -> None:
        """`stage` begins; `detail` says what it works on ('54 ops on cuda:0'), or is ''."""

    def stage_finished(self, stage: str, seconds: float) -> None:
        """`stage` ended after `seconds` of wall time."""

    def note(self, message: str) -> None:
        """A line from inside a stage: a cache hit, a measured candidate, a choice made."""


class Lines(Progress):
    """Progress as lines of text for a callback (the CLI prints them): 'profile: 54 ops on cuda:0',
    'profile: done in 1.20 s', and every note as it is."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def stage_started(self, stage: str, detail: str) -> None:
        self.say(f"{stage}: {detail}" if detail else f"{stage}: started")

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.say(f"{stage}: done in {seconds:.2f} s")

    def note(self, message: str) -> None:
        self.say(message)


def as_progress(progress) -> Progress:
    """None (report nothing), a Progress hook, or a callable taking one line of text (wrapped in Lines)."""
    if progress is None:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        return Lines(progress)
    raise ModelError(f"progress: expected a Progress hook or a callable taking a line of text, found "
                     f"{type(progress).__name__}")


class StageError(OparaError):
    """A stage failed; the message says which and what came before."""


class Stages:
    """Runs compile()'s stages in turn: each reported to the hook with its time; a stage failing with an
    unexpected exception becomes a StageError naming it and the stages that completed before it."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.done: list[str] = []
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, detail: str, fn: Callable[[], object]):
        self.progress.stage_started(stage, detail)
        start = time.perf_counter()
        try:
            result = fn()
        except OparaError:
            raise
        except Exception as e:
            before = f" (after {', '.join(self.done)})" if self.done else ""
            raise StageError(f"stage {stage!r} failed{before}: {type(e).__name__}: {e}") from e
        seconds = time.perf_counter() - start
        self.progress.stage_finished(stage, seconds)
        self.done.append(stage)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        return result
