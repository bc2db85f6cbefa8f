"""The README and docs/ hold together: every relative link resolves to a file of the repository (and its `#anchor`
to a heading of that file), the README stays an entry point (at most 200 lines), and no page names a path outside
the repository."""
import os
import re

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MAX_README_LINES = 200
OUTSIDE = ("../shared", "/work/")

# [text](target) and ![alt](target); the target ends at whitespace (a "title") or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def doc_files() -> list[str]:
    """README.md and every Markdown file under docs/, relative to the repository root."""
    files = ["README.md"]
    for folder, _, names in os.walk(os.path.join(ROOT, "docs")):
        files += [os.path.relpath(os.path.join(folder, n), ROOT) for n in sorted(names) if n.endswith(".md")]
    return files


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks, with inline code removed: links there are not links."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, INLINE_CODE.sub("", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation dropped (letters, digits, `_` and `-` kept),
    lower case, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: str) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(rel: str, root: str = ROOT) -> list[str]:
    """The relative links of one Markdown file (`rel`, under `root`) that do not resolve, as
    'file:line: target (why)'."""
    path = os.path.join(root, rel)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    broken = []
    for number, line in prose_lines(text):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = path if not file_part else os.path.normpath(os.path.join(os.path.dirname(path), file_part))
            where = f"{rel}:{number}: {target}"
            if os.path.commonpath([root, dest]) != root:
                broken.append(f"{where} (leaves the repository)")
            elif not os.path.exists(dest):
                broken.append(f"{where} (no such file)")
            elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                broken.append(f"{where} (no heading with anchor #{anchor})")
    return broken


@pytest.mark.parametrize("rel", doc_files())
def test_relative_links_resolve(rel):
    broken = broken_links(rel)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_a_broken_link_is_reported(tmp_path):
    """The checker itself: a missing file, a missing anchor and a path out of the repository are each caught,
    links inside code are not links, and a good link and anchor pass."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## The `run_all.sh` step\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md) [anchor](docs/a.md#the-run_allsh-step) [self](#intro) [web](https://example.org/x)\n"
        "# Intro\n"
        "[gone](docs/missing.md) [bad anchor](docs/a.md#nowhere) [out](../elsewhere.md)\n"
        "`[code](docs/missing.md)`\n```\n[fenced](docs/missing.md)\n```\n",
        encoding="utf-8")
    broken = broken_links("README.md", str(tmp_path))
    assert [b.split(": ", 1)[1].split(" (")[0] for b in broken] == [
        "docs/missing.md", "docs/a.md#nowhere", "../elsewhere.md"]
    assert all(b.startswith("README.md:3: ") for b in broken)


def test_readme_is_an_entry_point():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move depth to docs/"


@pytest.mark.parametrize("rel", doc_files())
def test_docs_name_no_path_outside_the_repository(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        text = f.read()
    found = [f"{rel}:{n}: {bad}" for n, line in enumerate(text.splitlines(), 1) for bad in OUTSIDE if bad in line]
    assert not found, "paths outside the repository:\n" + "\n".join(found)
