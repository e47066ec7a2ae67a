"""Check a built HTML site offline: every local link resolves, nothing loads from the internet.

    python -m sphinx -W -b html docs docs/_build/html
    python scripts/check_docs.py docs/_build/html --images 'notebooks/*.html' --api ufm

For every ``.html`` file under the folder it reads each ``href``, ``src`` and ``srcset``:

* a local target (a relative path, or one from the site's root) must be a file that exists,
  and a ``#fragment`` into an HTML page must be an ``id`` (or ``name``) on that page;
* a resource the page *loads* (``src``, ``srcset``, a ``<link>`` such as a stylesheet) must be
  local, since the site has to work without the internet; plain hyperlinks (``<a href>``) to
  other sites are allowed and not fetched.

``--images PATTERN`` (repeatable) requires each page matching the glob to show at least one
image, e.g. that the notebook pages hold their outputs. ``--api MODULE`` requires a page
``api/generated/MODULE.<name>.html`` for every name in ``MODULE.__all__``. Exits 1 and lists
every problem if there is one, else prints a one-line summary.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Tags whose href/src the browser fetches while showing the page (not a link a reader follows).
LOADED = {"img", "script", "link", "source", "iframe", "embed", "video", "audio", "track", "input"}


@dataclass
class Page:
    """What one HTML file refers to and which anchors it defines."""

    links: list[tuple[str, str, str]] = field(default_factory=list)  # (tag, attribute, url)
    ids: set[str] = field(default_factory=set)
    images: int = 0


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs if value is not None}
        for name in ("id", "name") if tag in ("a", "span", "div", "section") else ("id",):
            if name in values:
                self.page.ids.add(values[name])
        if tag == "img":
            self.page.images += 1
        for name in ("href", "src"):
            if name in values:
                self.page.links.append((tag, name, values[name].strip()))
        if "srcset" in values:
            for candidate in values["srcset"].split(","):
                if candidate.strip():
                    self.page.links.append((tag, "srcset", candidate.split()[0]))

    handle_startendtag = handle_starttag


def read_page(path: Path) -> Page:
    """Links, anchors and image count of the HTML file ``path``."""
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8", errors="replace"))
    collector.close()
    return collector.page


def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme) or url.startswith("//")


def check_site(root: str | Path) -> tuple[list[str], int, int]:
    """Problems of the site in ``root``, the number of local links checked and of external ones.

    Each problem is one line: ``page: what is wrong``.
    """
    root = Path(root).resolve()
    pages = {p: read_page(p) for p in sorted(root.rglob("*.html"))}
    problems: list[str] = []
    local = external = 0
    for path, page in pages.items():
        name = path.relative_to(root).as_posix()
        for tag, attribute, url in page.links:
            if not url or url.startswith(("javascript:", "data:", "mailto:", "tel:")):
                continue
            loaded = attribute != "href" or tag in LOADED
            if _is_external(url):
                external += 1
                if loaded:
                    problems.append(f"{name}: <{tag} {attribute}> loads {url} from the internet")
                continue
            local += 1
            parts = urlsplit(url)
            target_path = unquote(parts.path)
            if not target_path:
                target = path
            elif target_path.startswith("/"):
                target = root / target_path.lstrip("/")
            else:
                target = path.parent / target_path
            target = target.resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{name}: <{tag} {attribute}={url!r}> points to a missing file")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else read_page(target).ids
                if fragment not in ids:
                    problems.append(
                        f"{name}: <{tag} {attribute}={url!r}> has no anchor #{fragment}"
                    )
    return problems, local, external


def check_images(root: str | Path, patterns: list[str]) -> list[str]:
    """A problem for each page matching a glob of ``patterns`` that shows no image, or for a
    glob that matches no page."""
    root = Path(root)
    problems = []
    for pattern in patterns:
        matches = sorted(root.glob(pattern))
        if not matches:
            problems.append(f"{pattern}: no page matches")
        for path in matches:
            if read_page(path).images == 0:
                problems.append(f"{path.relative_to(root).as_posix()}: shows no image")
    return problems


def check_api_pages(root: str | Path, module: str, folder: str = "api/generated") -> list[str]:
    """A problem for each name of ``module.__all__`` without a page ``folder/module.name.html``."""
    names = importlib.import_module(module).__all__
    base = Path(root) / folder
    return [
        f"{folder}/{module}.{name}.html: missing (a name of {module}.__all__)"
        for name in names
        if not (base / f"{module}.{name}.html").is_file()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the built HTML folder, e.g. docs/_build/html")
    parser.add_argument(
        "--images", action="append", default=[], metavar="PATTERN",
        help="glob of pages (relative to root) that must each show an image; repeatable",
    )
    parser.add_argument(
        "--api", action="append", default=[], metavar="MODULE",
        help="module whose __all__ must each have a page api/generated/MODULE.NAME.html",
    )
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not (root / "index.html").is_file():
        print(f"{root}: no index.html (build the site first)", file=sys.stderr)
        return 1
    problems, local, external = check_site(root)
    problems += check_images(root, args.images)
    for module in args.api:
        problems += check_api_pages(root, module)
    pages = sum(1 for _ in root.rglob("*.html"))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"{len(problems)} problems in {pages} pages", file=sys.stderr)
        return 1
    print(
        f"{pages} pages: {local} local links resolve, {external} external links not followed, "
        "nothing loaded from the internet"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
