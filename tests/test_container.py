"""The Dockerfile builds from the context `.dockerignore` leaves, without Docker.

The build context is resolved as Docker's builder resolves it (moby/patternmatcher,
buildkit's dockerignore reader): comments and blank lines skipped, each pattern cleaned
and made relative, ``*`` and ``?`` within one path segment, ``**`` across any number of
them, ``!`` re-including, the last matching pattern deciding, and a pattern that
matches a folder taking in everything under it. Then every COPY source of the
Dockerfile must be in that context, and nothing private or bulky may be.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT


@dataclass(frozen=True)
class Pattern:
    text: str
    exception: bool
    regex: re.Pattern[str]


def read_dockerignore(text: str) -> list[Pattern]:
    """Return the patterns of a .dockerignore as Docker reads them."""
    patterns = []
    for n, line in enumerate(text.splitlines()):
        if n == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):  # a comment only in the first column
            continue
        line = line.strip()
        if not line:
            continue
        exception = line.startswith("!")
        if exception:
            line = line[1:].strip()
        cleaned = posixpath.normpath(line).lstrip("/") if line else line
        patterns.append(Pattern(cleaned, exception, re.compile(_regex(cleaned))))
    return patterns


def _regex(pattern: str) -> str:
    """Return the regex Docker compiles a cleaned pattern to."""
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" is "**"
                i += 1
            out += ".*" if i == len(pattern) else "(.*/)?"
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch in "[]":
            out += ch
        else:
            out += re.escape(ch)
        i += 1
    return out + "$"


def excluded(path: str, patterns: list[Pattern]) -> bool:
    """Return True when Docker leaves ``path`` (relative, with /) out of the context.

    A pattern matches a path or any of its parent folders; the last that matches wins.
    """
    parts = path.split("/")
    candidates = [path] + ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
    out = False
    for p in patterns:
        if p.exception != out:  # it could not change the verdict
            continue
        if any(p.regex.match(c) for c in candidates):
            out = not p.exception
    return out


def build_context(root: Path, patterns: list[Pattern]) -> set[str]:
    """Return every file Docker sends as the build context of ``root``."""
    exceptions = [p.text for p in patterns if p.exception]
    files: set[str] = set()
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        # An excluded folder no exception could reach into is not walked (as Docker).
        dirs[:] = [
            d
            for d in dirs
            if not excluded(prefix + d, patterns) or _may_reinclude(prefix + d, exceptions)
        ]
        files.update(prefix + name for name in names if not excluded(prefix + name, patterns))
    return files


def _may_reinclude(folder: str, exceptions: list[str]) -> bool:
    return any(
        e.startswith(folder + "/") or any(ch in e.split("/")[0] for ch in "*?[\\")
        for e in exceptions
    )


@dataclass(frozen=True)
class Copy:
    line: int
    sources: tuple[str, ...]
    dest: str
    stage_copy: bool  # COPY --from=<stage>: not from the context


def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """Return (line, INSTRUCTION, arguments) with continuation lines joined."""
    out: list[tuple[int, str, str]] = []
    buffer, start = "", 0
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):  # comments inside a continuation
            continue
        if not buffer:
            start = n
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        word, _, rest = buffer.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buffer = ""
    return out


def copies(text: str) -> list[Copy]:
    result = []
    for n, word, args in dockerfile_instructions(text):
        if word not in {"COPY", "ADD"}:
            continue
        tokens = args.split()
        flags = [t for t in tokens if t.startswith("--")]
        paths = [t for t in tokens if not t.startswith("--")]
        stage = any(f.startswith("--from=") for f in flags)
        result.append(Copy(n, tuple(paths[:-1]), paths[-1], stage))
    return result


def placements(copy: Copy, context: set[str]) -> dict[str, str]:
    """Return where a COPY from the context puts each file: {image path: context path}.

    As Docker copies: a folder source's contents land in the destination, not the folder
    itself (`COPY docs/ /d/` gives /d/a.md, not /d/docs/a.md); a file goes to the
    destination, or into it when it ends with / or there are several sources. A
    relative destination stays relative (to the WORKDIR, which this does not follow).
    """
    into = copy.dest.endswith("/") or len(copy.sources) > 1
    out: dict[str, str] = {}
    for source in copy.sources:
        src = posixpath.normpath(source).lstrip("/")
        wild = re.compile(_regex(src)) if any(ch in src for ch in "*?[") else None
        for f in sorted(context):
            parts = f.split("/")
            # the context path a source names: the file, or the folder that holds it
            named = next(
                (
                    "/".join(parts[:i])
                    for i in range(1, len(parts) + 1)
                    if "/".join(parts[:i]) == src
                    or (wild is not None and wild.match("/".join(parts[:i])) is not None)
                ),
                None,
            )
            if named is None:
                continue
            if named == f:
                target = posixpath.join(copy.dest, parts[-1]) if into else copy.dest
            else:
                target = posixpath.join(copy.dest, f[len(named) + 1 :])
            out[posixpath.normpath(target)] = f
    return out


def image_files(text: str, context: set[str]) -> dict[str, str]:
    """Return the files the final stage copies from the context: {image path: context path}."""
    steps = dockerfile_instructions(text)
    last_from = max(n for n, word, _ in steps if word == "FROM")
    placed: dict[str, str] = {}
    for c in copies(text):
        if c.line > last_from and not c.stage_copy:
            placed.update(placements(c, context))
    return placed


def markdown_links(text: str) -> list[str]:
    """Return the relative link targets of a Markdown text, anchors dropped."""
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [
        link.split("#")[0]
        for link in links
        if "://" not in link and not link.startswith(("mailto:", "#"))
    ]


def in_context(source: str, context: set[str]) -> bool:
    """Return True when a COPY source names a file, or a folder with files, of the context."""
    src = posixpath.normpath(source).lstrip("/")
    if src == ".":
        return bool(context)
    return any(f == src or f.startswith(src + "/") or fnmatch.fnmatchcase(f, src) for f in context)


DOCKERFILE = (ROOT / "Dockerfile").read_text()
IGNORE = read_dockerignore((ROOT / ".dockerignore").read_text())


# -- the resolver is Docker's -----------------------------------------------------


@pytest.mark.parametrize(
    ("ignore", "path", "left_out"),
    [
        ("*\n!README.md", "README.md", False),
        ("*\n!README.md", "docs/a.md", True),
        ("*\n!docs/", "docs/sub/a.md", False),  # a folder pattern takes what is under it
        ("!docs/\n*", "docs/a.md", True),  # the last match wins
        ("*\n!syncd/\n**/__pycache__", "syncd/x/__pycache__/m.pyc", True),
        ("**/*.pyc", "m.pyc", True),  # ** also matches no folder at all
        ("**/*.pyc", "a/b/m.pyc", True),
        ("*.md", "docs/a.md", False),  # * stays within one segment
        ("/docs/*.md", "docs/a.md", True),  # a leading / is the context's root
        ("  # not a comment", "# not a comment", True),  # only a # in the first column is
        ("# a comment\n", "# a comment", False),
        ("docs/**", "docs/a/b.md", True),
        ("do?s", "docs/a.md", True),
        ("*\n!docs\ndocs/secret.md", "docs/a.md", False),
    ],
)
def test_dockerignore_patterns_are_read_as_docker_reads_them(
    ignore: str, path: str, left_out: bool
) -> None:
    assert excluded(path, read_dockerignore(ignore)) is left_out


def test_the_context_of_a_tree_is_resolved_with_exceptions(tmp_path: Path) -> None:
    for name in ("README.md", "syncd/a.py", "syncd/__pycache__/a.pyc", ".venv/bin/python"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")

    context = build_context(tmp_path, read_dockerignore("*\n!syncd\n**/__pycache__\n"))

    assert context == {"syncd/a.py"}


# -- the shipped Dockerfile and .dockerignore agree -------------------------------


def test_every_copy_source_of_the_dockerfile_is_in_the_build_context() -> None:
    context = build_context(ROOT, IGNORE)
    from_context = [c for c in copies(DOCKERFILE) if not c.stage_copy]
    assert from_context, "no COPY read from the Dockerfile"

    missing = [
        f"line {c.line}: {s}" for c in from_context for s in c.sources if not in_context(s, context)
    ]

    assert not missing, f"COPY sources .dockerignore leaves out: {missing}"


@pytest.mark.parametrize(
    "private",
    [".git", ".venv", "tests", "bench", "demo-run", ".mypy_cache", "state.db", "config"],
)
def test_nothing_private_or_bulky_goes_into_the_context(private: str) -> None:
    # Checked on names, not on this checkout: a developer's tree has what CI's has not.
    for path in (private, f"{private}/x"):
        assert excluded(path, IGNORE), path
    assert excluded("syncd/core/__pycache__/model.cpython-311.pyc", IGNORE)


def test_the_dependency_layer_is_built_before_the_code_is_copied() -> None:
    """requirements.lock alone, then pip, then the code: a code change keeps the layer."""
    steps = dockerfile_instructions(DOCKERFILE)
    stages = [i for i, (_, word, _) in enumerate(steps) if word == "FROM"]
    build = steps[stages[0] : stages[1]]
    lock_copy = next(i for i, (_, w, a) in enumerate(build) if w == "COPY" and "requirements" in a)
    install = next(
        i for i, (_, w, a) in enumerate(build) if w == "RUN" and "-r requirements.lock" in a
    )
    code = [i for i, (_, w, _) in enumerate(build) if w == "COPY" and i != lock_copy]

    assert build[lock_copy][2].split()[:-1] == ["requirements.lock"]  # nothing else in it
    assert code and lock_copy < install < min(code)


@pytest.mark.parametrize(
    ("copy", "placed"),
    [
        # a folder's contents, not the folder: what flattened the docs into README's folder
        ("COPY README.md docs/ /d/", {"/d/README.md": "README.md", "/d/a.md": "docs/a.md",
                                      "/d/sub/b.md": "docs/sub/b.md"}),
        ("COPY docs/ /d/docs/", {"/d/docs/a.md": "docs/a.md", "/d/docs/sub/b.md": "docs/sub/b.md"}),
        ("COPY README.md /d/readme.txt", {"/d/readme.txt": "README.md"}),
        ("COPY *.md /d/", {"/d/README.md": "README.md"}),
    ],
)  # fmt: skip
def test_a_copy_places_files_as_docker_does(copy: str, placed: dict[str, str]) -> None:
    context = {"README.md", "docs/a.md", "docs/sub/b.md", "syncd/x.py"}
    assert image_files(f"FROM x\n{copy}\n", context) == placed


def test_the_documentation_in_the_image_keeps_its_links() -> None:
    """README's links (docs/x.md) and the docs' links to each other resolve in the image."""
    context = build_context(ROOT, IGNORE)
    image = image_files(DOCKERFILE, context)
    shipped = {src: at for at, src in image.items()}
    label = re.search(r'org\.opencontainers\.image\.documentation="([^"]+)"', DOCKERFILE)
    assert label and image.get(label.group(1)) == "README.md", sorted(image)

    dead = []
    for src, at in sorted(shipped.items()):
        if not src.endswith(".md"):
            continue
        for link in markdown_links((ROOT / src).read_text(encoding="utf-8")):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(src), link))
            if target not in shipped:
                continue  # not shipped (systemd/README.md): a link to the source tree
            there = posixpath.normpath(posixpath.join(posixpath.dirname(at), link))
            if image.get(there) != target:
                dead.append(f"{at}: {link} (the image has {target} at {shipped[target]})")
    assert any(src.startswith("docs/") for src in shipped), sorted(image)
    assert not dead, dead
