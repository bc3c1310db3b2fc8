"""The review desk: one QC queue shared by everyone connected to a server.

A thin layer over :class:`SwinBOBModule.review.ReviewSession` (the Slicer panel's logic, and its
decisions log): queue rows for the page, the rules to filter by, and decisions that name their
reviewer and the item the reviewer saw. Decisions of two browsers are serialised here (and in the
log by a file lock, against other servers and the Slicer panel), so none is lost; a reviewer who
decides an item another reviewer decided, or works on a sample another reviewer is on, is told.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from SwinBOBModule import review

from .folder import ReviewFolder

#: How long (s) a reviewer counts as working on the sample of their last action.
PRESENCE_SECONDS = 600
#: Rules to filter the queue by: the paper's 2-of-3 rule, a missing structure, or one SOLF check.
RULES = ("inaccurate", "missing", *review.SOLF_FEATURES)


def item_key(item: review.ReviewItem) -> str:
    """A queue item's name on the page: ``SAMPLE|LABEL`` (the browser names items only so)."""
    return f"{item.sample}|{item.label}"


@dataclass
class Decided:
    """What :meth:`ReviewDesk.decide` recorded, and what the reviewer should be told."""

    record: dict
    notice: str = ""


@dataclass
class ReviewDesk:
    """The queue of one review folder; safe to call from the server's threads."""

    folder: ReviewFolder
    session: review.ReviewSession = field(init=False)
    presence: dict = field(init=False, default_factory=dict)  # reviewer -> (sample, time.monotonic())
    lock: threading.RLock = field(init=False, default_factory=threading.RLock)

    def __post_init__(self):
        self.session = review.ReviewSession(str(self.folder.qcList))

    # -- the queue

    @property
    def current(self) -> review.ReviewItem | None:
        return self.session.current

    def rows(self) -> list[dict]:
        """The filtered queue, in order: position, key, sample, structure, why, decision, reviewer."""
        session = self.session
        rows = []
        for position, index in enumerate(session.view):
            item = session.items[index]
            record = session.decisions.get(item.key) or {}
            rows.append({"position": position, "key": item_key(item), "sample": item.sample,
                         "structure": item.structure, "rank": item.rank,
                         "why": "missing" if item.kind == "missing" else ", ".join(item.out_of_range),
                         "decision": session.state(item), "reviewer": record.get("reviewer", "")})
        return rows

    def counts(self) -> dict:
        done, total = self.session.progress
        return {"reviewed": done, "left": total - done, "total": total, "shown": len(self.session.view)}

    def set_filter(self, rule: str = "", structure: str = "", state: str = "") -> int:
        """Filter by rule (:data:`RULES`), structure name and decision state; "" = any.

        Raises:
            ValueError: an unknown rule, structure or state (the message lists the choices).
        """
        if rule and rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        if structure and structure not in self.session.structures():
            raise ValueError(f"structure {structure!r} is not in this queue")
        kind = rule if rule in review.KINDS else None
        feature = rule if rule in review.SOLF_FEATURES else None
        with self.lock:
            self.session.refresh()
            return self.session.setFilter(structure=structure or None, feature=feature, state=state or None,
                                          kind=kind)

    def step(self, direction: int) -> review.ReviewItem | None:
        with self.lock:
            self.session.refresh()
            return self.session.next() if direction > 0 else self.session.previous()

    def go_to(self, position: int) -> review.ReviewItem | None:
        with self.lock:
            return self.session.goTo(int(position))

    def jump_to_structure(self, structure: str) -> review.ReviewItem | None:
        """The next item (after the current one, wrapping) of ``structure`` in the view."""
        with self.lock:
            view = self.session.view
            count = len(view)
            for offset in range(1, count + 1):
                position = (self.session.position + offset) % count
                if self.session.items[view[position]].structure == structure:
                    return self.session.goTo(position)
            return self.current

    # -- deciding

    def find(self, key: str) -> review.ReviewItem:
        """The item named ``SAMPLE|LABEL``; ValueError for any other text."""
        for item in self.session.items:
            if item_key(item) == key:
                return item
        raise ValueError(f"no queue item {key!r}")

    def decide(self, decision: str, reviewer: str, key: str, comment: str = "") -> Decided:
        """Record ``decision`` by ``reviewer`` on the item ``key`` (the one the reviewer saw, even if
        another reviewer has moved the queue on since); the queue steps on when it is the current one.

        Raises:
            ValueError: unknown decision or item, or an empty reviewer name.
        """
        reviewer = (reviewer or "").strip()
        if not reviewer:
            raise ValueError("enter your name (Reviewer) before deciding: each decision names its reviewer")
        with self.lock:
            item = self.find(key)
            self.session.refresh()  # decisions of other servers and the Slicer panel
            before = self.session.decisions.get(item.key)
            self.session.reviewer = reviewer
            record = self.session.decide(decision, comment=comment, item=item, advance=item is self.current)
            self.seen(reviewer, item.sample)
        notice = ""
        if before and before.get("reviewer") != reviewer:
            notice = (f"{before.get('reviewer') or 'someone'} decided {item.sample} {item.structure} "
                      f"({before['decision']}, {before['time']}); your {decision} is recorded after it and counts.")
        return Decided(record, notice)

    # -- who is where

    def seen(self, reviewer: str, sample: str) -> None:
        if reviewer:
            with self.lock:
                self.presence[reviewer] = (sample, time.monotonic())

    def others_on(self, sample: str, reviewer: str) -> list[str]:
        """Other reviewers whose last action (within :data:`PRESENCE_SECONDS`) was on ``sample``."""
        now = time.monotonic()
        with self.lock:
            return sorted(name for name, (where, when) in self.presence.items()
                          if name != reviewer and where == sample and now - when < PRESENCE_SECONDS)
