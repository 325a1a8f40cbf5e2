"""The AAM head's loss before and after a change, side by side in one run, against linear + cross entropy.

``--before DIR`` is a copy of an older ``rankplug/`` tree, e.g. the commit before issue 15's fused path::

    mkdir -p /tmp/before && git archive 5f9d891 rankplug | tar -x -C /tmp/before
    python -m benchmarks.aam_before_after --before /tmp/before/rankplug

Its ``heads.py`` and ``functional/angular.py`` are loaded under a private package name (the rest of rankplug is
the checkout's), so both heads run in one process on the same features, labels and class weights, interleaved in
every round (:func:`benchmarks._common.interleaved_medians`): ``head.loss(head(features), labels)``, forward plus
backward (gradients of the features and the weight), ``s = 16``, ``m = 0.3``, at the shapes of
:mod:`benchmarks.aam`. Also counted: ATen calls per forward + backward (``torch.profiler``).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import rankplug
from benchmarks import _common, aam

NAME = "aam_before_after"
PACKAGE = "_rankplug_before"


def load_before(tree: Path) -> type:
    """``AAMAuxClassifier`` of the ``rankplug/`` tree at ``tree`` (its heads and angular module, renamed)."""
    heads, angular = tree / "heads.py", tree / "functional" / "angular.py"
    if not (heads.is_file() and angular.is_file()):
        raise SystemExit(f"--before {tree}: expected a rankplug/ tree with heads.py and functional/angular.py")
    package = types.ModuleType(PACKAGE)
    package.__path__ = []
    sys.modules[PACKAGE] = package
    modules = {}
    for name, path, replace in (
        ("angular", angular, ()),
        ("heads", heads, (("from rankplug.functional.angular import", f"from {PACKAGE}.angular import"),)),
    ):
        source = path.read_text()
        for old, new in replace:
            source = source.replace(old, new)
        spec = importlib.util.spec_from_loader(f"{PACKAGE}.{name}", loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        exec(compile(source, str(path), "exec"), module.__dict__)
        modules[name] = module
    return modules["heads"].AAMAuxClassifier  # type: ignore[no-any-return]


def head_step(head: Any, features: torch.Tensor, labels: torch.Tensor) -> Any:
    """One forward + backward of ``head.loss(head(features), labels)``."""

    def step() -> Any:
        return torch.autograd.grad(head.loss(head(features), labels), [features, head.weight])

    return step


def linear_peer(linear: torch.nn.Linear) -> aam.LinearCE:
    peer = aam.LinearCE(linear.in_features, linear.out_features)
    peer.linear = linear
    return peer


def aten_calls(fn: Any) -> int:
    return int(_common.profile_table(fn, calls=5)["aten_calls_per_call"])


def measure(
    before: type, shapes: Sequence[tuple[int, int, int]], *, rounds: int, block_s: float
) -> list[dict[str, Any]]:
    out = []
    device = torch.device("cpu")
    for n, d, c in shapes:
        torch.manual_seed(0)
        now = rankplug.AAMAuxClassifier(d, c, scale=aam.SCALE, margin=aam.MARGIN)
        old = before(d, c, scale=aam.SCALE, margin=aam.MARGIN)
        old.weight = torch.nn.Parameter(now.weight.detach().clone())
        linear = torch.nn.Linear(d, c, bias=False)
        features, labels = torch.randn(n, d, requires_grad=True), torch.randint(c, (n,))
        torch.testing.assert_close(old.loss(old(features), labels), now.loss(now(features), labels))
        steps = {
            "before": head_step(old, features, labels),
            "now": head_step(now, features, labels),
            "linear_ce": aam.timing_step(linear_peer(linear), features, labels),
        }
        times = _common.interleaved_medians(steps, device, rounds=rounds, block_s=block_s)
        base = times["linear_ce"]["median_s"]
        entry: dict[str, Any] = {"N": n, "d": d, "C": c, "times": times}
        entry["over_linear_ce"] = {name: t["median_s"] / base for name, t in times.items()}
        entry["aten_calls"] = {name: aten_calls(fn) for name, fn in steps.items()}
        out.append(entry)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="an older rankplug/ tree (see the module docstring)")
    args = p.parse_args(argv)
    device = _common.setup(args)
    if device.type != "cpu":
        raise SystemExit("aam_before_after runs on the CPU")
    machine = _common.machine_info(device)
    settings = dict(aam.SETTINGS["quick" if args.quick else "full"])
    settings.update(before=str(args.before), scale=aam.SCALE, margin=aam.MARGIN)
    before = load_before(args.before)
    results = measure(before, settings["shapes"], rounds=settings["rounds"], block_s=settings["block_s"])
    rows = [
        [
            f"({e['N']}, {e['d']}, {e['C']})",
            1e3 * e["times"]["before"]["median_s"],
            1e3 * e["times"]["now"]["median_s"],
            1e3 * e["times"]["linear_ce"]["median_s"],
            e["over_linear_ce"]["before"],
            e["over_linear_ce"]["now"],
            f"{e['aten_calls']['before']} / {e['aten_calls']['now']} / {e['aten_calls']['linear_ce']}",
        ]
        for e in results
    ]
    headers = ["(N, d, C)", "before ms", "now ms", "linear+CE ms", "before / linear+CE", "now / linear+CE"]
    print(_common.table([*headers, "ATen calls (before / now / linear+CE)"], rows))
    path = _common.write_record(
        _common.default_output(NAME, args, device), NAME, argv, machine, settings, {"shapes": results}
    )
    print(f"wrote {path}")
    return {"results": results, "path": str(path)}


if __name__ == "__main__":
    main()
