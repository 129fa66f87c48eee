"""Key patterns: globs and date masks, compiled once, matched per key.

Pure. ``datasource/{YYYYMMDD}/file_{YYYYMM}_{zz}.csv`` mixes:

* glob: ``*`` (within a segment), ``?`` (one character), ``[...]`` / ``[!...]`` (a class),
  ``**`` (anything, across ``/``; ``**/`` also matches no directory at all);
* date masks: ``{YYYY}`` ``{MM}`` ``{DD}`` ``{HH}`` ``{YYYYMM}`` ``{YYYYMMDD}`` match digits;
* any other ``{x}``: one segment's worth of characters (no ``/``), captured as ``x``.

The literal text before the first wildcard is :attr:`KeyPattern.prefix`, the ``Prefix``
sent to ListObjectsV2: every key the pattern matches starts with it, so no listing reads
more than it must. When date masks follow it (``landing/{YYYY}/{MM}/*.csv``), keys sort by
those dates, and :meth:`KeyPattern.start_after` skips the older ones as well.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from airflow_s3connect.errors import PatternError

#: Date masks and the dates they stand for, as strftime formats; each matches digits only.
DATE_MASKS: Mapping[str, str] = {
    "YYYY": "%Y",
    "MM": "%m",
    "DD": "%d",
    "HH": "%H",
    "YYYYMM": "%Y%m",
    "YYYYMMDD": "%Y%m%d",
}
_MASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class PatternMatch:
    key: str
    groups: Mapping[str, str]

    @property
    def date_parts(self) -> dict[str, str]:
        """The date masks' values, e.g. ``{"YYYYMMDD": "20250414", "YYYYMM": "202504"}``."""
        return {name: value for name, value in self.groups.items() if name in DATE_MASKS}


@dataclass(frozen=True)
class KeyPattern:
    source: str
    prefix: str
    regex: re.Pattern[str] = field(repr=False)
    #: strftime format of the date masks right after :attr:`prefix` (``%Y/%m``), if any.
    date_order: str | None = None

    def start_after(self, moment: datetime.datetime) -> str | None:
        """A ``StartAfter`` (relative, like :attr:`prefix`) that skips only keys dated before
        ``moment``'s date in the leading masks; None when the pattern does not start with dates."""
        return self.prefix + moment.strftime(self.date_order) if self.date_order else None

    def match(self, key: str) -> PatternMatch | None:
        found = self.regex.fullmatch(key)
        return PatternMatch(key, found.groupdict()) if found else None

    def matches(self, key: str) -> bool:
        return self.regex.fullmatch(key) is not None


def is_pattern(text: str) -> bool:
    """Whether ``text`` has any wildcard or mask (else it is a plain key or prefix)."""
    return any(ch in text for ch in "*?[{")


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> KeyPattern:
    """Compile ``pattern``; raises :class:`PatternError` saying what is wrong and where."""
    out: list[str] = []
    seen: set[str] = set()
    prefix_end: int | None = None
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch in "*?[{" and prefix_end is None:
            prefix_end = i
        if ch == "*":
            if pattern.startswith("**/", i):
                out.append(r"(?:.*/)?")
                i += 3
            elif pattern.startswith("**", i):
                out.append(r".*")
                i += 2
            else:
                out.append(r"[^/]*")
                i += 1
        elif ch == "?":
            out.append(r"[^/]")
            i += 1
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end == -1:
                raise PatternError(f"Pattern {pattern!r}: '[' at position {i} is never closed; write [[] for a '['.")
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            escaped = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            # Like a shell glob, a class never matches the '/' between segments.
            out.append(f"[^/{escaped}]" if negate else f"(?:(?!/)[{escaped}])")
            i = end + 1
        elif ch == "{":
            end = pattern.find("}", i)
            if end == -1:
                raise PatternError(f"Pattern {pattern!r}: '{{' at position {i} is never closed.")
            name = pattern[i + 1 : end]
            if not _MASK_NAME.fullmatch(name):
                raise PatternError(f"Pattern {pattern!r}: {{{name}}} is not a mask name; use letters, digits and '_'.")
            if name in seen:
                out.append(f"(?P={name})")
            else:
                seen.add(name)
                out.append(f"(?P<{name}>{_mask_regex(name)})")
            i = end + 1
        elif ch == "}":
            raise PatternError(f"Pattern {pattern!r}: '}}' at position {i} has no opening '{{'.")
        else:
            out.append(re.escape(ch))
            i += 1
    prefix = pattern if prefix_end is None else pattern[:prefix_end]
    order = None if prefix_end is None else _leading_dates(pattern[prefix_end:])
    return KeyPattern(pattern, prefix, re.compile("".join(out), re.DOTALL), order)


def _mask_regex(name: str) -> str:
    """Digits for a date mask (``%Y`` four, the others two); one segment for any other name."""
    if name not in DATE_MASKS:
        return "[^/]+"
    return re.sub(r"%([a-zA-Z])", lambda m: r"\d{4}" if m.group(1) == "Y" else r"\d{2}", DATE_MASKS[name])


def _leading_dates(rest: str) -> str | None:
    """The strftime format of the date masks ``rest`` starts with (and the text between
    them), as long as each continues the one before (year, month, day, hour): only then do
    keys sort by that date."""
    hierarchy = ["%Y", "%m", "%d", "%H"]
    order, end, done = "", 0, 0
    for token in re.findall(r"\{[^}]*\}|.", rest):
        directives = re.findall(r"%[a-zA-Z]", DATE_MASKS.get(token[1:-1], "")) if token.startswith("{") else []
        if directives and directives == hierarchy[done : done + len(directives)]:
            order += DATE_MASKS[token[1:-1]]
            end, done = len(order), done + len(directives)
        elif not directives and len(token) == 1 and token not in "*?[{}":
            order += token.replace("%", "%%")
        else:
            break
    return order[:end] or None


def escape_literal(value: str) -> str:
    """Make ``value`` match only itself inside a pattern (for macro values put into patterns)."""
    if "{" in value or "}" in value:
        raise PatternError(f"Value {value!r} contains a brace, which patterns cannot match literally.")
    return re.sub(r"([*?\[])", r"[\1]", value)
