"""The docs site: every "maths §N" citation lands on a section of docs/maths.md, nothing shipped points at files
users do not have, the install page lists every extra, and the site builds with warnings as errors."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MATHS = DOCS / "maths.md"

# "maths §3", "maths §3.2", and the second end of a range such as "maths §1-§3".
CITATION = re.compile(r"\b(?:maths|MATH) §(\d+(?:\.\d+)*)((?:\s*[-\u2013]\s*§\d+(?:\.\d+)*)*)")
RANGE_END = re.compile(r"§(\d+(?:\.\d+)*)")
# "## §3 RankGAN stages", "### §3.2 The clamp and its markers"
HEADING = re.compile(r"^#{2,6} §(\d+(?:\.\d+)*) \S", re.M)
# The MyST label above each heading, "(maths-3)=" / "(maths-3-2)=", that links and cross-references use.
LABEL = re.compile(r"^\((maths-[\w-]+)\)=\s*$", re.M)
LINK = re.compile(r"maths\.md#(maths-[\w-]+)")
FORBIDDEN = ("../shared", "MATH.md")
TEXT_SUFFIXES = {".py", ".md", ".rst", ".txt", ".toml", ".cfg", ".json", ".yaml", ".yml", ".cpp", ".typed"}


def _sources() -> list[Path]:
    """The files whose citations must resolve: the package, the adapters and the docs pages."""
    files = sorted((ROOT / "rankplug").rglob("*.py")) + sorted((ROOT / "integrations").glob("*.py"))
    return files + sorted(DOCS.glob("*.md")) + sorted((DOCS / "api").glob("*.rst"))


def _shipped() -> list[Path]:
    """Every text file a user gets: the package, the adapters, the docs (not their build) and the README."""
    files = [ROOT / "README.md"]
    for folder in (ROOT / "rankplug", ROOT / "integrations", DOCS):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "_build" not in path.relative_to(ROOT).parts:
                files.append(path)
    return files


def _sections() -> set[str]:
    return set(HEADING.findall(MATHS.read_text()))


def _label(section: str) -> str:
    return "maths-" + section.replace(".", "-")


def test_maths_page_keeps_the_specification_numbering():
    sections = _sections()
    top = sorted(int(s) for s in sections if "." not in s)
    assert top == list(range(1, 8)), f"docs/maths.md must have §1 to §7, once each; found {top}"
    for section in sections:
        if "." in section:
            assert section.rsplit(".", 1)[0] in sections, f"§{section} has no parent section"


def test_every_maths_heading_has_its_label():
    text = MATHS.read_text()
    for match in HEADING.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        expected = f"({_label(match.group(1))})="
        assert before == expected, f"the heading {match.group(0)!r} needs the line {expected!r} right above it"
    assert "(maths-conventions)=" in text


def test_every_citation_resolves_to_a_section():
    sections = _sections()
    missing = []
    count = 0
    for path in _sources():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in CITATION.finditer(line):
                cited = [match.group(1), *RANGE_END.findall(match.group(2))]
                count += len(cited)
                missing += [f"{path.relative_to(ROOT)}:{number}: §{c}" for c in cited if c not in sections]
    assert count > 0, "no 'maths §N' citation found at all: is the pattern out of date?"
    assert not missing, "citations of sections that docs/maths.md does not have:\n" + "\n".join(missing)


def test_every_link_into_the_maths_page_has_a_target():
    labels = set(LABEL.findall(MATHS.read_text()))
    broken = []
    for path in [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]:
        broken += [f"{path.relative_to(ROOT)}: #{t}" for t in LINK.findall(path.read_text()) if t not in labels]
    assert not broken, "links to labels that docs/maths.md does not define:\n" + "\n".join(broken)


def test_nothing_shipped_points_at_the_development_only_files():
    found = []
    for path in _shipped():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{number}: {word}" for word in FORBIDDEN if word in line]
    message = "shipped files must cite docs/maths.md ('maths §N'), not files users do not have:\n"
    assert not found, message + "\n".join(found)


def test_the_install_page_lists_every_extra():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    page = (DOCS / "install.md").read_text()
    missing = [name for name in extras if f"| `{name}` |" not in page]
    assert not missing, f"docs/install.md's extras table lacks {missing}"


@pytest.mark.skipif(os.environ.get("RANKPLUG_SKIP_DOCS_BUILD") == "1", reason="RANKPLUG_SKIP_DOCS_BUILD=1")
def test_slow_the_docs_build_with_warnings_as_errors(tmp_path):
    """SLOW (about a minute on 2 CPU cores): the whole site, API reference included, as CI builds it."""
    for module in ("sphinx", "myst_parser"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html"]
    command += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"the docs build failed:\n{(done.stdout + done.stderr)[-6000:]}"
    assert (tmp_path / "html" / "maths.html").is_file()
