"""Write docs/performance.md from its prose and the measurements in benchmarks/.

    python scripts/make_performance_page.py              # writes docs/performance.md
    python scripts/make_performance_page.py --check      # exit 1 if the page is not what it renders
    python scripts/make_performance_page.py --commands   # how to rerun each measurement

The page's prose, one paragraph per design decision, is ``docs/performance.md.in``; it holds
no measured number. Every number comes from one JSON file in ``benchmarks/`` (one file per
measurement) through a placeholder ``{{ expression | format }}``:

* ``expression`` is Python, evaluated with each file as a name (its stem; dots and ``[i]``
  reach into it) and the helpers of ``HELPERS`` (``min``, ``max``, ``sqrt``, ``file``,
  ``as_unit``, ``idle_busy``, ``before_after``...), e.g.
  ``bench_contention_mixed.rows.chunks.idle.seconds``;
* ``format`` is an optional joiner for a list (``list``: "a, b, c"; ``and``: "a, b and c";
  ``or``; ``range``: "lowest to highest"), then ``code`` (a command in backticks) or a number
  format: a Python format spec (``.1f``, ``d``, ``,``; exponents lose their zeros and plus
  sign: ``1.8e-9``), ``sigN`` (N significant digits, at least one decimal) or ``word``
  (a count up to ten in words, 0 as "none").

``{# ... #}`` is a comment of the template, and a line ``{% sources %}`` becomes the list of
files with their command, machine and note. Rendering fails if a file is missing a value the
prose reads, or if a file in ``benchmarks/`` is not read by any placeholder.

A file written by a benchmark script has that script's shape: rerunning its ``command`` with
``--out benchmarks/NAME.json`` (``--commands`` prints them) and then this script updates the
page. The files first committed were transcribed from the hand-written page (their
``"source"`` says so). Two forms stand for what that page gave in other terms than the script
writes: ``{"value": 4.1, "unit": "GB"}`` (read with ``as_unit``) and ``{"between": [30, 40]}``
(a value of which only bounds were given; ``range`` reads it, any other use fails).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
TEMPLATE = ROOT / "docs" / "performance.md.in"
PAGE = ROOT / "docs" / "performance.md"
HEADER = ("<!-- Written by scripts/make_performance_page.py from docs/performance.md.in and the"
          " JSON files in benchmarks/: edit those and run it, not this page. -->\n")

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
COMMENT = re.compile(r"\{#.*?#\}\n?", re.DOTALL)
SOURCES = "{% sources %}"
JOINERS = {"list", "and", "or", "range"}
WORDS = ("none", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


class Node:
    """A dict or list of a benchmark file, read by attribute (``a.b``) or index (``a[0]``)."""

    def __init__(self, value: Any, where: str) -> None:
        self._value = value
        self._where = where

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or not isinstance(self._value, dict):
            raise AttributeError(f"{self._where} has no field {key!r}")
        if key not in self._value:
            raise AttributeError(f"{self._where} has no field {key!r}")
        return wrap(self._value[key], f"{self._where}.{key}")

    def __getitem__(self, key: Any) -> Any:
        try:
            item = self._value[key]
        except (KeyError, IndexError, TypeError) as error:
            raise KeyError(f"{self._where}[{key!r}]: {error}") from None
        if isinstance(key, slice):
            return Node(item, f"{self._where}[{key.start}:{key.stop}]")
        return wrap(item, f"{self._where}[{key!r}]")

    def __iter__(self):
        if not isinstance(self._value, list):
            raise TypeError(f"{self._where} is not a list")
        return (wrap(item, f"{self._where}[{i}]") for i, item in enumerate(self._value))

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"<{self._where}: {self._value!r}>"


def wrap(value: Any, where: str) -> Any:
    return Node(value, where) if isinstance(value, (dict, list)) else value


def plain(value: Any) -> Any:
    """The JSON value behind ``value`` (a Node, a list or tuple of them, or a plain value)."""
    if isinstance(value, Node):
        return value._value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# -- formats -------------------------------------------------------------------------------------


def format_number(value: Any, spec: str) -> str:
    value = plain(value)
    if isinstance(value, dict):
        raise TypeError(f"{value} is not a number: read it with as_unit or range")
    if spec == "word":
        return WORDS[value] if isinstance(value, int) and 0 <= value < len(WORDS) else str(value)
    if spec.startswith("sig"):
        digits = int(spec[3:])
        magnitude = math.floor(math.log10(abs(value))) if value else 0
        return f"{value:.{max(1, digits - 1 - magnitude)}f}"
    text = format(value, spec)
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m.group(1).replace("+", "") + m.group(2), text)


def bounds(values: Any) -> tuple[float, float]:
    """The lowest and highest of numbers and ``{"between": [lo, hi]}`` values."""
    values = plain(values)
    if isinstance(values, dict):
        values = [values]
    low, high = [], []
    for v in values:
        if isinstance(v, dict):
            lo, hi = v["between"]
        else:
            lo = hi = v
        low.append(lo)
        high.append(hi)
    return min(low), max(high)


def format_value(value: Any, spec: str) -> str:
    tokens = spec.split()
    joiner = tokens.pop(0) if tokens and tokens[0] in JOINERS else None
    if tokens == ["code"]:
        if plain(value) is None:
            raise ValueError("no command recorded")
        return f"`{plain(value)}`"
    if len(tokens) > 1:
        raise ValueError(f"format {spec!r}: one number format at most")
    number = tokens[0] if tokens else ""

    def one(v: Any) -> str:
        return format_number(v, number) if number else str(plain(v))

    if joiner == "range":
        low, high = bounds(value)
        return f"{one(low)} to {one(high)}"
    if joiner is not None:
        items = [one(v) for v in plain(value)]
        if joiner == "list" or len(items) < 2:
            return ", ".join(items)
        return ", ".join(items[:-1]) + f" {joiner} " + items[-1]
    if isinstance(plain(value), str) and not number:
        return plain(value)
    return one(value)


# -- helpers of the template ---------------------------------------------------------------------


def as_unit(value: Any, unit: str, per: float) -> float:
    """``value`` in ``unit``: a number in the file's own unit is divided by ``per`` (the size of
    one ``unit`` in it, e.g. 1024 MB per GB), a ``{"value", "unit"}`` in ``unit`` is its value."""
    value = plain(value)
    if isinstance(value, dict):
        if value.get("unit") != unit:
            raise ValueError(f"{value} is not in {unit}")
        return value["value"]
    return value / per


def file(record: Node) -> str:
    """The path of a benchmark file, in backticks."""
    return f"`benchmarks/{record._where.split('.')[0].split('[')[0]}.json`"


def _at(node: Any, path: str) -> Any:
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def idle_busy(record: Node, row: str) -> str:
    """Table cells of a bench_contention row: idle seconds, busy seconds, busy/idle."""
    r = record.rows[row]
    return (f"{format_number(r.idle.seconds, '.1f')} s | {format_number(r.busy.seconds, '.1f')} s | "
            f"{format_number(r.slowdown, '.2f')}")


def before_after(record: Node, path: str, spec: str) -> str:
    """Table cells of rounds of the code before and after: "before / after" per round, then
    after/before of each round."""
    rounds = list(record.rounds)
    cells = [f"{format_number(_at(r.before, path), spec)} / {format_number(_at(r.after, path), spec)}"
             for r in rounds]
    ratios = [format_number(_at(r.after, path) / _at(r.before, path), ".2f") for r in rounds]
    return " | ".join(cells) + " | " + ", ".join(ratios)


HELPERS = {"min": min, "max": max, "len": len, "sum": sum, "round": round, "abs": abs, "zip": zip,
           "sqrt": math.sqrt, "log": math.log, "median": statistics.median, "as_unit": as_unit,
           "file": file, "idle_busy": idle_busy, "before_after": before_after}


# -- rendering -----------------------------------------------------------------------------------


def load_records(folder: Path = BENCHMARKS) -> dict[str, Any]:
    """Every ``*.json`` of ``folder`` by stem (each stem a Python name)."""
    records = {}
    for path in sorted(folder.glob("*.json")):
        if not path.stem.isidentifier():
            raise ValueError(f"{path.name}: a benchmark file's stem must be a Python name")
        records[path.stem] = json.loads(path.read_text())
    return records


def render_text(template: str, records: dict[str, Any]) -> tuple[str, list[str]]:
    """``template`` with its placeholders filled from ``records``; the names of the records
    it read, in the order of their first use."""
    names = {name: Node(data, name) for name, data in records.items()}
    used: list[str] = []

    def fill(match: re.Match) -> str:
        body = match.group(1).strip()
        expression, _, spec = body.partition(" | ")
        try:
            tree = ast.parse(expression.strip(), mode="eval")
            for node in ast.walk(tree):
                if isinstance(node, ast.Name) and node.id in names and node.id not in used:
                    used.append(node.id)
            # the template is this repository's own file, so its expressions are trusted
            value = eval(compile(tree, "<placeholder>", "eval"),
                         {"__builtins__": {}, **HELPERS, **names})
            return format_value(value, spec.strip())
        except (AttributeError, IndexError, KeyError, NameError, SyntaxError, TypeError,
                ValueError, ZeroDivisionError) as error:
            raise ValueError(f"placeholder {{{{ {body} }}}}: {error}") from None

    return PLACEHOLDER.sub(fill, COMMENT.sub("", template)), used


LIST_ITEM = re.compile(r"^(\s*)([-*+] |\d+[.)] )")
# A word that would make a new line a list item, a quote, a heading, a table row or the
# underline of a heading: it stays at the end of the line before instead.
UNSAFE_START = re.compile(r"^([-*+>=|]+|#.*|\d+[.)])$")


def _tokens(words: list[str]) -> list[str]:
    """Words, those of one code span (a command) and ``a = b`` joined into one."""
    tokens: list[str] = []
    open_span = False
    for word in words:
        if open_span:
            tokens[-1] += " " + word
        else:
            tokens.append(word)
        if word.count("`") % 2:
            open_span = not open_span
    joined: list[str] = []  # "K = 10" stays on one line
    for token in tokens:
        if joined and (token == "=" or joined[-1].endswith(" =")):
            joined[-1] += " " + token
        else:
            joined.append(token)
    return joined


def _wrap(words: list[str], first: str, rest: str, width: int) -> list[str]:
    lines, line, empty = [], first, True
    for word in _tokens(words):
        if not empty and len(line) + 1 + len(word) > width and not UNSAFE_START.match(word):
            lines.append(line)
            line = rest + word
        else:
            line = line + word if empty else f"{line} {word}"
        empty = False
    return lines + [line]


def reflow(text: str, width: int = 100) -> str:
    """Paragraphs and list items of Markdown filled to ``width`` columns (placeholders leave
    ragged lines); headings, tables, comments and blank lines stay as they are."""
    out: list[str] = []
    item: tuple[str, str, list[str]] | None = None  # (first prefix, next prefix, words)

    def flush() -> None:
        nonlocal item
        if item is not None:
            out.extend(_wrap(item[2], item[0], item[1], width))
            item = None

    for line in text.split("\n"):
        if not line.strip() or line.startswith(("#", "|", "<!--")):
            flush()
            out.append(line)
            continue
        marker = LIST_ITEM.match(line)
        if marker or item is None:
            flush()
            first = marker.group(0) if marker else ""
            item = (first, " " * len(first), line[len(first):].split())
        else:
            item[2].extend(line.split())
    flush()
    return "\n".join(out)


def sources(records: dict[str, Any], order: list[str]) -> str:
    """The list of benchmark files, in the order the page first reads them."""
    sources_of = {str(records[name].get("source", "")) for name in order}
    transcribed = sorted(s for s in sources_of if s.startswith("transcribed"))
    count = sum(1 for name in order if records[name].get("source") in transcribed)
    lines = [f"The numbers above are read from these {len(order)} files of `benchmarks/` by "
             "`scripts/make_performance_page.py`, in the order the page first reads them. "
             + (f"The {count} marked *transcribed* were not measured again but copied from "
                "the page as it was written by hand (their `source`: "
                + "; ".join(f'"{s}"' for s in transcribed)
                + "); each note says what that page said of its origin. " if count else "")
             + "A file with a command is rerun with `--out benchmarks/NAME.json` added to it "
             "(`python scripts/make_performance_page.py --commands` lists them), which "
             "updates the page when this script runs next.", ""]
    for name in order:
        r = records[name]
        command = f"`{r['command']}`" if r.get("command") else "no command recorded"
        machine = r.get("machine_note") or ", ".join(
            f"{key} {r[key]}" for key in ("cores", "threads", "torch", "python", "device") if key in r)
        source = ("*transcribed*" if r.get("source") in transcribed
                  else r.get("source", "measured by its command"))
        parts = [command, machine, source, r.get("note")]
        lines.append(f"- `benchmarks/{name}.json`: " + "; ".join(p.rstrip(".") for p in parts if p) + ".")
    return "\n".join(lines)


def render(template_path: Path = TEMPLATE, folder: Path = BENCHMARKS) -> tuple[str, list[str]]:
    """The page and the benchmark files it reads; fails if any file of ``folder`` is unread."""
    records = load_records(folder)
    text, used = render_text(template_path.read_text(), records)
    unused = sorted(set(records) - set(used))
    if unused:
        raise ValueError(f"benchmark files the page does not read: {', '.join(unused)}")
    text = text.replace(SOURCES, sources(records, used))
    return HEADER + reflow(text), used


def rerun_commands(folder: Path = BENCHMARKS) -> list[str]:
    """How to rerun each benchmark file: a script's command writing to that file, else a
    comment (the command, if any, and the file's ``rerun`` instructions)."""
    lines = []
    for name, record in load_records(folder).items():
        command = record.get("command")
        if record.get("rerun"):
            lines.append(f"# benchmarks/{name}.json: {command}, rerun {record['rerun']}")
            continue
        if command and command.startswith("python scripts/") and "--out" not in command:
            command = f"{command} --out benchmarks/{name}.json"
        lines.append(command if command and command.startswith("python scripts/")
                     else f"# benchmarks/{name}.json: {command or 'no command recorded'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="exit 1 if docs/performance.md differs from what it renders to")
    mode.add_argument("--commands", action="store_true",
                      help="print the command that reruns each benchmark file")
    args = parser.parse_args(argv)
    if args.commands:
        print("\n".join(rerun_commands()))
        return 0
    page, used = render()
    if args.check:
        current = PAGE.read_text() if PAGE.is_file() else ""
        if current != page:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(True), page.splitlines(True),
                "docs/performance.md (committed)", "docs/performance.md (rendered)"))
            print("docs/performance.md is not what scripts/make_performance_page.py renders: "
                  "run it (and edit docs/performance.md.in or benchmarks/, not the page)")
            return 1
        print(f"docs/performance.md matches its template and {len(used)} benchmark files")
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)} from {len(used)} benchmark files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
