"""Pages of a job's journal: where records start, about every PAGE bytes, so that a log of any size is tailed and
paged by reading one page of it, never the whole.

The journal has no markers to find a record from an arbitrary offset, so the starts are found by reading its
headers once (runners/journal.py ``boundaries``: payloads are seeked over), kept per journal (a few KiB for 1 GiB)
and extended as the journal grows.
"""
from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict

from runners import journal

PAGE = 256 << 10
KEPT = 64  # journals whose page starts are kept (LRU); 1 GiB of log is 4 096 ints


class LogIndex:
    def __init__(self, path: str):
        self.path = path
        self.points = [0]  # page starts: record starts at least PAGE apart
        self.end = 0  # end of the last whole record seen
        self.ident = None
        self.lock = threading.Lock()

    def refresh(self) -> int:
        """Extend the pages to the journal's end; returns that end."""
        with self.lock:
            try:
                st = os.stat(self.path)
                ident = (st.st_dev, st.st_ino)
            except FileNotFoundError:
                ident, st = None, None
            if ident != self.ident or (st is not None and st.st_size < self.end):
                self.points, self.end, self.ident = [0], 0, ident  # another journal (the job's data was cleared)
            prev, start = self.points[-1], None
            for pos in journal.boundaries(self.path, prev, PAGE):
                if start is not None:  # a record follows it: a page start (the journal's end is none)
                    self.points.append(start)
                    prev, start = start, None
                if pos - prev >= PAGE:
                    start = pos
                self.end = pos
            return self.end

    def pages(self) -> int:
        self.refresh()
        return len(self.points)

    def page_start(self, n: int) -> int:
        """Start of page ``n`` (negative: from the last one), clamped to the pages there are."""
        self.refresh()
        n = len(self.points) + n if n < 0 else n
        return self.points[max(0, min(n, len(self.points) - 1))]

    def page_of(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self.points, offset) - 1)

    def tail(self, nbytes: int = PAGE) -> int:
        """A record start with at least ``nbytes`` of the journal after it (at most twice that and one record), or 0."""
        end = self.refresh()
        i = bisect.bisect_right(self.points, max(0, end - nbytes)) - 1
        return self.points[max(0, i)]

    def is_start(self, offset: int) -> bool:
        """Whether ``offset`` is where a record starts (or the end): the only offsets a stream may resume from."""
        end = self.refresh()
        if offset < 0 or offset > end:
            return False
        p = self.points[self.page_of(offset)]
        if p == offset:
            return True
        for pos in journal.boundaries(self.path, p, 1):
            if pos >= offset:
                return pos == offset
        return False


_indexes: "OrderedDict[str, LogIndex]" = OrderedDict()
_lock = threading.Lock()


def of(path: str) -> LogIndex:
    with _lock:
        index = _indexes.pop(path, None) or LogIndex(path)
        _indexes[path] = index
        while len(_indexes) > KEPT:
            _indexes.popitem(last=False)
        return index
