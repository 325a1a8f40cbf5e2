"""Packaging: integrations/ installs as rankplug.integrations, the core stays light and typed."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import rankplug
import rankplug.functional
import rankplug.integrations

ROOT = Path(__file__).resolve().parents[2]


def test_integrations_import_as_a_subpackage():
    assert rankplug.integrations.__name__ == "rankplug.integrations"
    assert Path(rankplug.integrations.__file__).resolve() == ROOT / "integrations" / "__init__.py"


def test_core_never_imports_an_integration():
    for path in (ROOT / "rankplug").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.startswith(("rankplug.integrations", "integrations")) for n in names), path


def test_importing_rankplug_loads_no_optional_dependency():
    # tqdm is a core dependency (progress bars) and torch itself imports it, so it is not in the list
    code = (
        "import sys; import rankplug, rankplug.functional, rankplug.integrations, rankplug.app.eval, rankplug.app.cli; "
        "heavy = ['torchvision', 'kornia', 'sklearn', 'matplotlib', 'PIL', 'scipy', 'torch_fidelity', 'hypothesis']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("rankplug-*.whl")
    return path


def test_wheel_ships_integrations_inside_rankplug_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "rankplug/integrations/__init__.py" in names
    assert "rankplug/py.typed" in names
    assert "rankplug/functional/angular.py" in names
    assert "rankplug/app/eval/completion.py" in names
    top_level = {n.split("/")[0] for n in names if not n.startswith("rankplug-")}
    assert top_level == {"rankplug"}, top_level


def test_wheel_requires_only_the_core_and_installs_the_command(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(meta).decode().splitlines()
    requires = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    core = sorted(r.name for r in requires if "extra ==" not in str(r.marker or ""))
    # Each one imported: einops was declared but never imported (issue 10, finding 13). safetensors writes and reads
    # models-stage<i>.safetensors (rankplug.app.weights); tomli reads TOML configs on Python < 3.11 only.
    assert core == ["safetensors", "tomli", "torch", "tqdm"], core
    (tomli,) = [r for r in requires if r.name == "tomli"]
    assert str(tomli.marker) == 'python_version < "3.11"'
    extras = {line.split(":", 1)[1].strip() for line in lines if line.startswith("Provides-Extra:")}
    assert {"demo", "eval", "examples", "test", "all"} <= extras
    with zipfile.ZipFile(wheel) as archive:
        (entry,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry).decode()
    assert "[console_scripts]" in entry_points and "rankplug = rankplug.app.cli:main" in entry_points


def test_wheel_metadata_licence_classifiers_and_extras(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        lines = archive.read(meta).decode().splitlines()
    assert any(n.endswith("LICENSE") for n in names), "the MIT licence text ships in the wheel"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    classifiers = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Classifier:")]
    assert "Framework :: Pytest" not in classifiers  # rankplug is not a pytest plugin
    requires = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    eval_extra = [r for r in requires if 'extra == "eval"' in r]
    assert any(r.startswith("pillow") for r in eval_extra), eval_extra
    # torch-fidelity 0.4 only: rankplug builds its Inception through 0.4's constructor (see pyproject.toml)
    (fidelity,) = [Requirement(r) for r in eval_extra if Requirement(r).name == "torch-fidelity"]
    assert fidelity.specifier == SpecifierSet(">=0.4,<0.5"), eval_extra


def test_every_public_callable_is_annotated():
    public = [getattr(rankplug, n) for n in rankplug.__all__ if n != "functional"]
    public += [getattr(rankplug.functional, n) for n in rankplug.functional.__all__]
    for obj in public:
        functions = (
            [obj]
            if inspect.isfunction(obj)
            else [
                member
                for name, member in vars(obj).items()
                if inspect.isfunction(member) and (not name.startswith("_") or name == "__init__")
            ]
        )
        for function in functions:
            signature = inspect.signature(function)
            for name, parameter in signature.parameters.items():
                if name in ("self", "cls"):
                    continue
                assert parameter.annotation is not inspect.Parameter.empty, f"{function.__qualname__}({name})"
            assert signature.return_annotation is not inspect.Signature.empty, function.__qualname__
