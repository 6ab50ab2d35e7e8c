"""Requirement lines of `python: {type: manual, requirements-file: ...}`, checked as the official client 0.10.0 does.

The official client (``datasphere/pyenv.py``, ``_parse_requirements``) reads the file, strips it, splits it on
``\\n``, strips every line and drops the empty ones; it lets ``--no-deps``, ``--extra-index-url...`` and
``--trusted-host...`` through untouched, parses every other line with ``packaging.requirements.Requirement``
(packaging 23.2 in its environment) and then refuses markers and URLs.

dsjobs cannot use packaging for this: its own environment (and the job venvs users install dsjobs into for the
pytest plugin) has a newer packaging that words errors differently, and pinning packaging 23 would clash with
them. So this module is a small PEP 508 checker of its own that accepts exactly the lines packaging 23.2 accepts
and words each rejection exactly as packaging 23.2 does:

- syntax errors: ``InvalidRequirement`` with a three-line text -- the message, the line, and a marker line of
  spaces, ``~`` over the offending span and a ``^`` -- each after the first indented by four spaces;
- a version list that parses but then fails as a set of specifiers (an ``===`` arbitrary version may swallow a
  comma: ``x===1,2``): ``InvalidSpecifier``, ``Invalid specifier: '2'``;
- Python's own errors the official client lets through: a marker string that ``ast.literal_eval`` refuses
  (``'\\x'``), and a version number longer than ``sys.get_int_max_str_digits()`` digits;
- then the client's own: ``requirement markers are not supported (LINE)``, ``requirement url is not supported
  (LINE)``.

tests/unit/test_requirements.py runs a corpus of lines through this module and through the real packaging 23.2 in
the official client's interpreter and asserts the same verdicts and the same messages.

Known limit: a marker nested some 490 parentheses deep exhausts the interpreter's stack in the official client
(``RecursionError``); here it does too, but at a depth and with a wording that depend on the caller's stack.
"""
from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path
from typing import Optional


class RequirementError(ValueError):
    """A requirement line the official client refuses; ``str()`` is the official message.

    ``kind`` names the exception the official client raises for it: ``InvalidRequirement``, ``InvalidSpecifier``,
    ``ValueError``, ``SyntaxError`` (from ``ast.literal_eval``) or ``RecursionError``.
    """

    def __init__(self, message: str, kind: str = "InvalidRequirement", line: str = ""):
        super().__init__(message)
        self.kind = kind
        self.line = line


# --- tokens --------------------------------------------------------------------------------------------------------
# Each pattern is matched anchored at the cursor, as a PEP 508 token of packaging 23.2's grammar. `\b` looks at the
# real previous character (re's `pos` argument keeps it), as packaging's tokenizer does.

_WS = re.compile(r"[ \t]+")
_NAME = re.compile(r"\b[a-zA-Z0-9][a-zA-Z0-9._-]*\b")
_URL = re.compile(r"[^ \t]+")
_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
_BOOL = re.compile(r"\b(?:or|and)\b")
_IN = re.compile(r"\bin\b")
_NOT = re.compile(r"\bnot\b")
_MARKER_OP = re.compile(r"===|==|~=|!=|<=|>=|<|>")
_MARKER_VAR = re.compile(
    r"\b(?:python_version|python_full_version|os[._]name|sys[._]platform|platform_(?:release|system)"
    r"|platform[._](?:version|machine|python_implementation)|python_implementation"
    r"|implementation_(?:name|version)|extra)\b")
_WILDCARD_AFTER = re.compile(r"\.\*")
_LOCAL_AFTER = re.compile(r"\+[a-z0-9]+(?:[-_.][a-z0-9]+)*")  # case-sensitive, as packaging's tokenizer

# A version clause: the operator decides which version forms may follow (PEP 440). Alternatives and quantifiers
# are ordered so that a prefix match ends where packaging 23.2's specifier token ends.
_PRE = r"(?:[-_.]?(?:alpha|beta|preview|pre|a|b|c|rc)[-_.]?[0-9]*)?"
_POST = r"(?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?[0-9]*)?"
_DEV = r"(?:[-_.]?dev[-_.]?[0-9]*)?"
_LOCAL = r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?"
_START = r"\s*v?(?:[0-9]+!)?[0-9]+"
_CLAUSE = (
    r"(?:===\s*[^\s;)]*"  # arbitrary equality: anything but whitespace, `;` and `)`
    rf"|(?:==|!=){_START}(?:\.[0-9]+)*(?:\.\*|{_PRE}{_POST}{_DEV}{_LOCAL})?"
    rf"|~={_START}(?:\.[0-9]+)+{_PRE}{_POST}{_DEV}"
    rf"|(?:<=|>=|<|>){_START}(?:\.[0-9]+)*{_PRE}{_POST}{_DEV})"
)
_CLAUSE_TOKEN = re.compile(_CLAUSE, re.IGNORECASE)
_CLAUSE_WHOLE = re.compile(r"^\s*" + _CLAUSE + r"\s*$", re.IGNORECASE)
_OPERATORS = ("===", "~=", "==", "!=", "<=", ">=", "<", ">")  # longest first

# A PEP 440 version, as packaging's Version accepts it (used for the digit-count limit of int()).
_PEP440 = re.compile(
    r"^\s*v?(?:(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*"
    r"(?:[-_.]?(?:alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?:[0-9]+)?)?"
    r"(?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?(?:[0-9]+)?)?"
    r"(?:[-_.]?dev[-_.]?(?:[0-9]+)?)?)"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?\s*$",
    re.IGNORECASE)
_DIGITS = re.compile(r"[0-9]+")

_MARKER_OP_WORDS = "<=, <, !=, ==, >=, >, ~=, ===, in, not in"


class _Reject(Exception):
    def __init__(self, message: str, start: int, end: int):
        super().__init__(message)
        self.message, self.start, self.end = message, start, end


class _Line:
    """One recursive-descent pass over a line; raises _Reject at the first syntax error."""

    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.clauses = ""  # the version clauses as packaging joins them (no whitespace, commas kept)
        self.url: Optional[str] = None
        self.has_marker = False

    # cursor helpers
    def ended(self) -> bool:
        return self.i == len(self.s) or (self.i == len(self.s) - 1 and self.s[self.i] == "\n")  # re's `$`

    def sees(self, what) -> bool:
        if isinstance(what, str):
            return self.s.startswith(what, self.i)
        return what.match(self.s, self.i) is not None

    def take(self, what) -> Optional[str]:
        if isinstance(what, str):
            if self.s.startswith(what, self.i):
                self.i += len(what)
                return what
            return None
        m = what.match(self.s, self.i)
        if m is None:
            return None
        self.i = m.end()
        return m.group()

    def blanks(self) -> None:
        self.take(_WS)

    def fail(self, message: str, start: Optional[int] = None, end: Optional[int] = None):
        raise _Reject(message, self.i if start is None else start, self.i if end is None else end)

    # grammar
    def requirement(self) -> None:
        self.blanks()
        if self.take(_NAME) is None:
            self.fail("Expected package name at the start of dependency specifier")
        self.blanks()
        if self.sees("["):
            self.extras()
        self.blanks()
        if self.take("@"):
            self.blanks()
            at = self.i
            self.url = self.take(_URL)
            if self.url is None:
                self.fail("Expected URL after @")
            if not self.ended():
                if self.take(_WS) is None:
                    self.fail("Expected whitespace after URL")
                if not self.ended():
                    self.marker_clause(at, "URL and whitespace")
        else:
            at = self.i
            self.version_spec()
            self.blanks()
            if not self.ended():
                self.marker_clause(at, "version specifier" if self.clauses else
                                   "name and no valid version specifier")
        if not self.ended():
            self.fail("Expected end of dependency specifier")

    def extras(self) -> None:
        opened = self.i
        self.i += 1
        self.blanks()
        if self.take(_NAME) is not None:
            while True:
                self.blanks()
                if self.sees(_NAME):
                    self.fail("Expected comma between extra names")
                if not self.take(","):
                    break
                self.blanks()
                if self.take(_NAME) is None:
                    self.fail("Expected extra name after comma")
        self.blanks()
        if not self.take("]"):
            self.fail("Expected matching RIGHT_BRACKET for LEFT_BRACKET, after extras", opened)

    def version_spec(self) -> None:
        opened = self.i if self.sees("(") else None
        if opened is not None:
            self.i += 1
        self.blanks()
        while True:
            begin = self.i
            clause = self.take(_CLAUSE_TOKEN)
            if clause is None:
                break
            self.clauses += clause
            if self.sees(_WILDCARD_AFTER):
                self.fail(".* suffix can only be used with `==` or `!=` operators", begin, self.i + 1)
            if self.sees(_LOCAL_AFTER):
                self.fail("Local version label can only be used with `==` or `!=` operators", begin)
            self.blanks()
            if not self.take(","):
                break
            self.clauses += ","
            self.blanks()
        self.blanks()
        if opened is not None and not self.take(")"):
            self.fail("Expected matching RIGHT_PARENTHESIS for LEFT_PARENTHESIS, after version specifier", opened)

    def marker_clause(self, start: int, after: str) -> None:
        if not self.take(";"):
            self.fail(f"Expected end or semicolon (after {after})", start)
        self.has_marker = True
        self.marker()
        self.blanks()

    def marker(self) -> None:
        self.marker_atom()
        while self.take(_BOOL) is not None:
            self.marker_atom()

    def marker_atom(self) -> None:
        self.blanks()
        if self.sees("("):
            opened = self.i
            self.i += 1
            self.blanks()
            self.marker()
            self.blanks()
            if not self.take(")"):
                self.fail("Expected matching RIGHT_PARENTHESIS for LEFT_PARENTHESIS, after marker expression",
                          opened)
        else:
            self.blanks()
            self.marker_value()
            self.blanks()
            self.marker_operator()
            self.blanks()
            self.marker_value()
        self.blanks()

    def marker_value(self) -> None:
        if self.take(_MARKER_VAR) is not None:
            return
        quoted = self.take(_STRING)
        if quoted is None:
            self.fail("Expected a marker variable or quoted string")
        # packaging evaluates the string right away; what Python refuses there escapes as Python's own error
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ast.literal_eval(quoted)
        except (SyntaxError, ValueError) as e:
            raise RequirementError(str(e), type(e).__name__, self.s) from None

    def marker_operator(self) -> None:
        if self.take(_IN) is not None:
            return
        if self.take(_NOT) is not None:
            if self.take(_WS) is None:
                self.fail("Expected whitespace after 'not'")
            if self.take(_IN) is None:
                self.fail("Expected 'in' after 'not'")
            return
        if self.take(_MARKER_OP) is None:
            self.fail(f"Expected marker operator, one of {_MARKER_OP_WORDS}")


def _check_clauses(line: str, joined: str) -> None:
    """What packaging's SpecifierSet does with the joined clauses: split on commas, parse, hash (normalize)."""
    for piece in (p.strip() for p in joined.split(",")):
        if not piece:
            continue
        if _CLAUSE_WHOLE.search(piece) is None:
            raise RequirementError(f"Invalid specifier: '{piece}'", "InvalidSpecifier", line)
        op = next(o for o in _OPERATORS if piece.startswith(o))
        version = piece[len(op):].strip()
        m = _PEP440.search(version)
        if m is None:
            continue  # not PEP 440 (`===` anything, `==1.*`): packaging keeps it as it is
        # packaging turns every number of the version into an int: more digits than Python allows is a ValueError
        local = m.group("local")
        head = version if local is None else version[:m.start("local")]
        numbers = _DIGITS.findall(head) + [p for p in re.split(r"[._-]", local or "") if p.isdigit()]
        try:
            for n in numbers:
                int(n)
        except ValueError as e:
            raise RequirementError(str(e), "ValueError", line) from None


def check_requirement(line: str) -> None:
    """Raise RequirementError as ``packaging.requirements.Requirement(line)`` 23.2 would (nothing for a valid line).

    Markers and URLs are valid here; see ``check_line`` for the official client's refusal of them.
    """
    _parse(line)


def _parse(line: str) -> _Line:
    p = _Line(line)
    try:
        p.requirement()
    except _Reject as e:
        marks = " " * e.start + "~" * (e.end - e.start) + "^"
        raise RequirementError("\n    ".join((e.message, line, marks)), "InvalidRequirement", line) from None
    except RecursionError as e:
        raise RequirementError(str(e), "RecursionError", line) from None
    _check_clauses(line, p.clauses)
    return p


def check_line(line: str) -> None:
    """One (stripped, non-empty) line of a requirements file, as the official client checks it."""
    if line == "--no-deps" or line.startswith("--extra-index-url") or line.startswith("--trusted-host"):
        return
    p = _parse(line)
    if p.has_marker:
        raise RequirementError(f"requirement markers are not supported ({line})", "ValueError", line)
    if p.url is not None:
        raise RequirementError(f"requirement url is not supported ({line})", "ValueError", line)


def split_lines(text: str) -> list[str]:
    """The lines the official client takes from a requirements file's text (before any check)."""
    return [line.strip() for line in text.strip().split("\n") if line.strip()]


def check_text(text: str) -> list[str]:
    """The requirement lines of a file's text, checked; raises RequirementError at the first line refused."""
    lines = split_lines(text)
    for line in lines:
        check_line(line)
    return lines


def read_requirements(path: Path | str) -> list[str]:
    """Read (as the official client: ``Path.read_text()``, universal newlines) and check a requirements file."""
    return check_text(Path(path).read_text())


__all__ = ["RequirementError", "check_requirement", "check_line", "split_lines", "check_text",
           "read_requirements"]
