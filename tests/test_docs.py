"""The documentation stands alone: every relative link in the Markdown files resolves inside the
repository (anchors included), no file names a path outside it, the README stays short, and the
README links every page of docs/.

The files checked are those git knows (tracked, or new and not ignored) that exist on disk, so a
page is checked before it is first committed and a file being moved is not.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150

# Paths outside the repository that must never be named. Built from pieces so that this file
# does not name them itself.
OUTSIDE = ("../" + "shared", "/" + "work/", "/" + "opt/", "/" + "home/", "/" + "Users/", "~" + "/")
# A relative path that climbs: one or more "../" not preceded by a word character or a dot.
CLIMB = re.compile(r"(?<![\w.])((?:\.\./)+)")

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"""<a\s[^>]*(?:name|id)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
ATX_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SETEXT_UNDERLINE = re.compile(r"^\s{0,3}(=+|-+)\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def repo_files(root: Path = ROOT) -> set[str]:
    """Paths (relative, with /) of the files git tracks or would track, that exist on disk."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the documentation is checked where git is")
    return {p for p in out.decode("utf-8").split("\0") if p and (root / p).is_file()}


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def unfenced(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code replaced by a word."""
    return [(number, INLINE_CODE.sub("code", line)) for number, line in unfenced(text)]


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in a Markdown text."""
    found = []
    for number, line in prose_lines(text):
        for pattern in (INLINE_LINK, REFERENCE, HTML_LINK):
            found.extend((number, target) for target in pattern.findall(line))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as rendered, lowercased, punctuation dropped
    (letters, digits, '_', '-' and spaces stay), spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image: its text
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown text defines: heading slugs (repeats get -1, -2, ...) and
    explicit HTML anchors."""
    seen: dict[str, int] = {}
    result: set[str] = set()

    def add(heading: str) -> None:
        base = slug(heading.strip())
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")

    previous = (0, "")
    for number, line in unfenced(text):
        heading = ATX_HEADING.match(line)
        underlined = previous[0] == number - 1 and previous[1].strip()
        if heading:
            add(heading.group(2))
        elif (
            SETEXT_UNDERLINE.match(line)
            and underlined
            and not previous[1].lstrip().startswith(("|", "-", "*", ">"))
        ):
            add(previous[1])
        result.update(HTML_ANCHOR.findall(line))
        previous = (number, line)
    return result


def inside(path: str) -> bool:
    return not (path == ".." or path.startswith("../") or os.path.isabs(path))


def link_problems(root: Path, files: set[str], source: str) -> list[str]:
    """What is wrong with the links of one Markdown file (`source`, relative to `root`)."""
    text = read_text(root / source) or ""
    folders = {str(Path(f).parent.as_posix()) for f in files}
    folders |= {p.as_posix() for f in files for p in Path(f).parents}
    problems = []
    for number, target in links(text):
        where = f"{source}:{number}: {target}"
        if SCHEME.match(target):
            continue  # http:, https:, mailto: ...
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if path_part.startswith("/"):
            problems.append(f"{where}: an absolute path; link relative to the file")
            continue
        if path_part:
            resolved = os.path.normpath(os.path.join(os.path.dirname(source), path_part))
            resolved = Path(resolved).as_posix()
            if not inside(resolved):
                problems.append(f"{where}: climbs above the repository root")
                continue
            if resolved not in files and resolved not in folders:
                problems.append(f"{where}: no such file or folder in the repository")
                continue
        else:
            resolved = source
        if anchor:
            if not resolved.endswith(".md") or resolved not in files:
                problems.append(f"{where}: an anchor into something that is not a Markdown file")
            elif anchor not in anchors(read_text(root / resolved) or ""):
                problems.append(f"{where}: {resolved} has no heading with the anchor #{anchor}")
    return problems


def outside_path_problems(source: str, text: str) -> list[str]:
    """Names of paths outside the repository in one text file (`source`, relative to the
    root): known outside folders anywhere, and relative paths that climb above the root."""
    problems = []
    depth = len(Path(source).parent.parts)
    for number, line in enumerate(text.splitlines(), start=1):
        for name in OUTSIDE:
            if name in line:
                problems.append(f"{source}:{number}: names {name!r}: {line.strip()[:120]}")
        for climb in CLIMB.findall(line):
            if climb.count("../") > depth:
                problems.append(
                    f"{source}:{number}: {climb!r} climbs above the repository root: "
                    f"{line.strip()[:120]}"
                )
    return problems


def markdown_files(files: set[str]) -> list[str]:
    return sorted(f for f in files if f.endswith(".md"))


def test_every_relative_link_resolves_inside_the_repository() -> None:
    files = repo_files()
    pages = markdown_files(files)
    assert "README.md" in pages
    problems = [p for page in pages for p in link_problems(ROOT, files, page)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_no_file_names_a_path_outside_the_repository() -> None:
    problems = []
    for source in sorted(repo_files()):
        text = read_text(ROOT / source)
        if text is not None:
            problems.extend(outside_path_problems(source, text))
    assert not problems, "paths outside the repository:\n" + "\n".join(problems)


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it to {README_MAX_LINES} and move detail to docs/"
    )


def test_the_readme_links_every_docs_page() -> None:
    files = repo_files()
    linked = set()
    for _, target in links((ROOT / "README.md").read_text(encoding="utf-8")):
        path_part = unquote(target.partition("#")[0])
        if path_part and not SCHEME.match(path_part):
            linked.add(Path(os.path.normpath(path_part)).as_posix())
    pages = [f for f in markdown_files(files) if f.startswith("docs/")]
    assert pages, "docs/ has no pages"
    missing = [page for page in pages if page not in linked]
    assert not missing, f"README.md does not link: {', '.join(missing)}"


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """Each check fails on a small repository made to break it."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# A page\n\n## Keys and secrets\n\n```\n[not a link](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    (tmp_path / "README.md").write_text(
        "[good](docs/page.md#keys-and-secrets) [folder](docs/) [web](https://example.com)\n"
        "[missing](docs/gone.md)\n"
        "[bad anchor](docs/page.md#no-such-heading)\n"
        "[climbs](../" + "elsewhere/x.md)\n"
        "[absolute](/etc/passwd)\n"
        "[self](#a-readme)\n",
        encoding="utf-8",
    )
    files = {"README.md", "docs/page.md"}
    problems = link_problems(tmp_path, files, "README.md")
    assert [p.split(": ", 2)[0] for p in problems] == [
        "README.md:2",
        "README.md:3",
        "README.md:4",
        "README.md:5",
        "README.md:6",
    ], problems
    assert link_problems(tmp_path, files, "docs/page.md") == []

    assert outside_path_problems("serving/x.py", 'ok = "../data"\n') == []
    assert len(outside_path_problems("serving/x.py", 'bad = "' + "../" * 2 + 'data"\n')) == 1
    assert len(outside_path_problems("x.md", "see " + "/" + "work/notes\n")) == 1
    assert len(outside_path_problems("x.yaml", "# docs: " + "../" + "shared/notes\n")) == 2

    assert slug("The reviewers' web app") == "the-reviewers-web-app"
    assert slug("cpu-small, and fine-tuning") == "cpu-small-and-fine-tuning"
    assert slug("`touchstone data` commands") == "touchstone-data-commands"
    assert anchors("# Tests\n## Tests\nTitle\n=====\n") == {"tests", "tests-1", "title"}
