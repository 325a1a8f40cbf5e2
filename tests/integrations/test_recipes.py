"""Every code block of docs/integrations_*.md and of the README's Integrations section runs as written.

A page (or a README subsection) is a unit, run in order in a fresh sandbox that holds a copy of the upstream's
from-scratch stand-in (``tests/standins/``):

- a ``diff`` block is applied with ``git apply`` to a pristine copy of the stand-in (the diff must be a complete
  unified diff whose context lines are upstream's; the stand-ins carry those lines), and the blocks after it run
  on the patched copy;
- a ``bash`` block runs with ``bash -e`` in the sandbox's working folder, ``python`` / ``python3`` / ``torchrun``
  from this interpreter's environment, after two edits that make it runnable on a 2-core CPU: the values of the
  variables that name the user's own paths (``STYLEGAN2_ADA=~/stylegan2-ada-pytorch`` and the like, listed per
  upstream in ``UPSTREAMS``) point into the sandbox, and the sizes listed in ``SHRINK`` (epochs, kimg, steps)
  become tiny. Every listed size must occur in the page, so the two lists cannot drift from the docs.

Any other kind of block fails the test: a recipe the test cannot run is a recipe nobody checked. Each page must
also say which upstream commit and torch version it was checked against.

With ``RANKPLUG_<NAME>_DIR`` set to a real checkout (``DCGAN`` = pytorch/examples, ``STARGAN``, ``STYLEGAN2_ADA``,
``STUDIOGAN``), every diff is also checked against it (``git apply --check``, which changes nothing), and the
DCGAN commands run on a copy of its ``dcgan/`` folder.

The README part fails until README.md's Integrations section is the text rankplug's issue 14 supplied.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "standins"
BIN = Path(sys.executable).parent
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
CHECKED = re.compile(r"Checked against.{0,200}?\b[0-9a-f]{40}\b.{0,200}?torch\s+\d+\.\d+", re.S)


def _images(folder: Path, count: int = 48, side: int = 16) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    u = np.linspace(0, 1, side)
    for index in range(count):
        wave = np.sin(2 * np.pi * (2 + rng.randint(2)) * (u[:, None] + u[None, :]) + rng.rand() * 2 * np.pi)
        pixels = (wave * 127.5 + 127.5).astype(np.uint8)
        Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(folder / f"{index:03d}.png")
    return folder


@dataclass
class Upstream:
    """How one upstream's recipes run here: its stand-in, the user's variables and the sizes to shrink."""

    name: str
    standin: Path  # copied into the sandbox as the upstream checkout
    into: str  # where in the checkout the stand-in goes ("" = the checkout itself)
    variables: dict[str, str]  # NAME -> value, "{checkout}", "{work}" and "{data}" filled in
    shrink: list[tuple[str, str]] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)  # printed somewhere in the page's commands
    data: str | None = None  # "images" or "studiogan": test data made in the sandbox

    def prepare(self, sandbox: Path) -> Path:
        checkout = sandbox / "checkout"
        if checkout.exists():
            shutil.rmtree(checkout)
        target = checkout / self.into if self.into else checkout
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.standin.is_dir():
            shutil.copytree(self.standin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(self.standin, target)
        return checkout


UPSTREAMS = {
    "dcgan": Upstream(
        "dcgan",
        STANDINS / "dcgan_main.py",
        "dcgan/main.py",
        {"EXAMPLES": "{checkout}"},
        # A fixed seed: after 4 iterations on random data the stage-1 critic may still rank its fakes above the
        # data, and the stage-2 recipe then refuses the markers (as it should); the test is of the recipe running.
        shrink=[
            (
                "--niter 2 --batchSize 64",
                "--niter 2 --batchSize 16 --ngf 8 --ndf 8 --max-iters 4 --fakeSize 64 --manualSeed 0",
            )
        ],
        expect=["Loss_D:"],
    ),
    "stargan": Upstream(
        "stargan",
        STANDINS / "stargan",
        "",
        {"STARGAN": "{checkout}"},
        shrink=[("--image_size 128", "--image_size 16 --num_iters 4 --log_step 2")],
        expect=["Elapsed"],
    ),
    "stylegan2_ada": Upstream(
        "stylegan2_ada",
        STANDINS / "stylegan2_ada",
        "",
        {"STYLEGAN2_ADA": "{checkout}", "DATA": "{data}", "IMAGES": "{data}", "RANKPLUG": str(ROOT)},
        shrink=[
            ("--gpus=1 --kimg=1000", "--gpus=1 --kimg=0.03"),
            ("--iterations 200", "--iterations 3 --batch 8 --batch-gpu 4 --log-every 3"),
            ("--variant gogan", "--variant gogan --iterations 3"),
        ],
        expect=["fixes: ", "rankplug: markers m_high=", "markers/high="],
        data="images",
    ),
    "studiogan": Upstream(
        "studiogan",
        STANDINS / "studiogan",
        "",
        {"STUDIOGAN": "{checkout}", "CFG": "{work}/config.yaml", "DATA": "{data}", "SAVE": "{work}/save"},
        expect=["rankplug: markers m_high="],
        data="studiogan",
    ),
}
README_SECTIONS = {"DCGAN": "dcgan", "StarGAN": "stargan", "StyleGAN2-ADA": "stylegan2_ada", "StudioGAN": "studiogan"}


def doc_units() -> list[tuple[str, str, str]]:
    """``(unit id, upstream, markdown)`` for every integration page."""
    units = []
    for path in sorted((ROOT / "docs").glob("integrations_*.md")):
        name = path.stem.removeprefix("integrations_")
        units.append((f"docs/{path.name}", name, path.read_text()))
    return units


def readme_units() -> list[tuple[str, str, str]]:
    """``(unit id, upstream, markdown)`` for every ``###`` subsection of the README's ``## Integrations``."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Integrations\n", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^### ", section, flags=re.M)
    units = []
    if BLOCK.search(parts[0]):
        units.append(("README Integrations (intro)", "", parts[0]))
    for part in parts[1:]:
        title = part.splitlines()[0]
        matches = [upstream for key, upstream in README_SECTIONS.items() if title.startswith(key)]
        units.append((f"README ### {title}", matches[0] if matches else "", part))
    return units


def _override(block: str, variables: dict[str, str]) -> str:
    """Point the user's path variables (``NAME=value  # comment`` lines) at the sandbox."""
    for name, value in variables.items():
        block = re.sub(rf"^{name}=.*$", f"{name}={value!s}", block, flags=re.M)
    return block


def _studiogan_inputs(work: Path, data: Path) -> None:
    _images(data / "class0", 32)
    cfg = '{"OPTIMIZATION": {"total_steps": 6, "batch_size": 8}, "RUN": {"print_freq": 3, "save_freq": 6}}'
    (work / "config.yaml").write_text(cfg)  # JSON syntax, which is YAML too (the stand-in reads JSON)


class Runner:
    """Runs one unit's blocks in order in ``sandbox``; collects what the commands printed."""

    def __init__(self, upstream: Upstream, sandbox: Path) -> None:
        self.upstream, self.sandbox = upstream, sandbox
        self.work = sandbox / "work"
        self.work.mkdir(parents=True)
        self.data = sandbox / "data"
        if upstream.data == "images":
            _images(self.data)
        elif upstream.data == "studiogan":
            _studiogan_inputs(self.work, self.data)
        self.checkout = upstream.prepare(sandbox)
        self.output = ""
        self.used: set[str] = set()

    def values(self) -> dict[str, str]:
        fill = {"checkout": str(self.checkout), "work": str(self.work), "data": str(self.data)}
        return {name: value.format(**fill) for name, value in self.upstream.variables.items()}

    def diff(self, block: str) -> None:
        self.checkout = self.upstream.prepare(self.sandbox)  # every diff is against pristine upstream
        patch = self.sandbox / "recipe.diff"
        patch.write_text(block)
        out = subprocess.run(["git", "apply", str(patch)], cwd=self.checkout, capture_output=True, text=True)
        assert out.returncode == 0, f"the diff does not apply to the stand-in:\n{out.stderr}\n{block}"

    def bash(self, block: str, shrink: list[tuple[str, str]]) -> None:
        script = _override(block, self.values())
        for old, new in shrink:
            if old in script:
                self.used.add(old)
                script = script.replace(old, new)
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "HOME": str(self.sandbox),  # a ~ left in a command points into the sandbox, never at the user's home
        }
        out = subprocess.run(
            ["bash", "-e", "-c", script], cwd=self.work, env=env, capture_output=True, text=True, timeout=600
        )
        self.output += out.stdout + out.stderr
        assert out.returncode == 0, (
            f"the commands failed:\n{script}\n--- output ---\n{(out.stdout + out.stderr)[-4000:]}"
        )

    def run(self, markdown: str) -> None:
        blocks = BLOCK.findall(markdown)
        for language, body in blocks:
            if language == "diff":
                self.diff(body)
            elif language == "bash":
                self.bash(body, self.upstream.shrink)
            else:
                raise AssertionError(f"a ```{language} block: only diff and bash recipes can be run\n{body}")


@pytest.mark.parametrize(("unit", "name", "markdown"), doc_units(), ids=[unit for unit, _, _ in doc_units()])
def test_every_block_of_the_integration_page_runs(unit, name, markdown, tmp_path):
    upstream = UPSTREAMS[name]
    assert CHECKED.search(markdown), f"{unit} must say 'Checked against' an upstream commit (40 hex) and 'torch X.Y'"
    assert BLOCK.findall(markdown), f"{unit} has no recipe"
    runner = Runner(upstream, tmp_path)
    runner.run(markdown)
    assert runner.used == {old for old, _ in upstream.shrink}, f"sizes listed for {name} but not in {unit}"
    for text in upstream.expect:
        assert text in runner.output, f"{text!r} not printed by {unit}'s commands:\n{runner.output[-3000:]}"


@pytest.mark.parametrize(("unit", "name", "markdown"), readme_units(), ids=[unit[:40] for unit, _, _ in readme_units()])
def test_every_block_of_the_readme_integrations_section_runs(unit, name, markdown, tmp_path):
    blocks = BLOCK.findall(markdown)
    if not blocks:
        return
    assert name, f"{unit}: a README subsection with recipes must be about one of {sorted(README_SECTIONS)}"
    Runner(UPSTREAMS[name], tmp_path).run(markdown)


def test_the_readme_names_every_integration_page():
    text = (ROOT / "README.md").read_text().split("\n## Integrations\n", 1)[1].split("\n## ", 1)[0]
    for path in sorted((ROOT / "docs").glob("integrations_*.md")):
        assert f"docs/{path.name}" in text, f"README's Integrations section does not link {path.name}"


# ------------------------------------------------------------------------------------- real checkouts
REAL = {"dcgan": "RANKPLUG_DCGAN_DIR", "stargan": "RANKPLUG_STARGAN_DIR"}
REAL.update(stylegan2_ada="RANKPLUG_STYLEGAN2_ADA_DIR", studiogan="RANKPLUG_STUDIOGAN_DIR")


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_diff_applies_to_a_real_checkout(name):
    directory = os.environ.get(REAL[name])
    if not directory:
        pytest.skip(f"set {REAL[name]} to a checkout of the real upstream")
    diffs = [body for _, upstream, text in doc_units() if upstream == name for lang, body in BLOCK.findall(text)]
    diffs = [body for body in diffs if body.startswith("--- ")]
    for body in diffs:
        out = subprocess.run(
            ["git", "apply", "--check", "-"], input=body, cwd=directory, capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, f"does not apply to {directory}:\n{out.stderr}\n{body}"


def test_dcgan_commands_run_on_the_real_script(tmp_path):
    directory = os.environ.get(REAL["dcgan"])
    if not directory:
        pytest.skip("set RANKPLUG_DCGAN_DIR to a checkout of pytorch/examples")
    pytest.importorskip("torchvision")
    real = Upstream("dcgan", Path(directory) / "dcgan", "dcgan", {"EXAMPLES": "{checkout}"})
    # Upstream has no --max-iters: its FakeData (1,000 images) at batch 64 is 16 batches per epoch.
    real.shrink = [("--niter 2 --batchSize 64", "--niter 2 --batchSize 64 --ngf 8 --ndf 8")]
    _, _, markdown = next(unit for unit in doc_units() if unit[1] == "dcgan")
    runner = Runner(real, tmp_path)
    runner.run(markdown)
    assert "[1/2][15/16] Loss_D:" in runner.output, runner.output[-2000:]
