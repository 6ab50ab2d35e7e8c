"""A job's log journal: how lines of it are written.

``printable``: text that did not come from the engine (package build output, a job's file names) is escaped before
it goes into a line of the system log, so that nothing a job controls can start a line that looks like the
engine's ("job completed successfully").
"""
from __future__ import annotations


def printable(text: str) -> str:
    """Untrusted text for a log line: control characters (a newline that would start a forged line) escaped."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)
