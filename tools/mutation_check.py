"""Do the tests catch wrong maths? Apply known-wrong edits to a copy of rankplug and check that tests fail.

Each mutation is a plausible bug (real and fake swapped, GoGAN's 2-epsilon dropped, a gradient attached to
MBGAN's margin, ``arccos`` used directly, ...). For each one the package is copied to a temporary directory,
one line is rewritten, and the relevant test files run against the copy. A mutation that leaves every test
passing is a hole in the tests.

Usage::

    python tools/mutation_check.py            # all mutations, prints a table, exits 1 if any survives
    python tools/mutation_check.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation(
        "hinge margin: real and fake swapped",
        "rankplug/functional/margin.py",
        "torch.relu(fake + margin - real)",
        "torch.relu(real + margin - fake)",
        ("tests/test_margin.py",),
    ),
    Mutation(
        "symmetric hinge: signs of real and fake swapped",
        "rankplug/functional/margin.py",
        "torch.relu(margin - real) + torch.relu(margin + fake)",
        "torch.relu(margin + real) + torch.relu(margin - fake)",
        ("tests/test_margin.py",),
    ),
    Mutation(
        "RankGAN Eq. 4: current and previous fakes swapped",
        "rankplug/functional/ranking.py",
        "rank = torch.relu(fake - prev_fake)",
        "rank = torch.relu(prev_fake - fake)",
        ("tests/test_ranking.py",),
    ),
    Mutation(
        "RankGAN Eq. 6: clamp on the wrong side of m_high",
        "rankplug/functional/ranking.py",
        "torch.relu(m_high - real)",
        "torch.relu(real - m_high)",
        ("tests/test_ranking.py",),
    ),
    Mutation(
        "GoGAN Eq. 3: real and fake swapped",
        "rankplug/functional/ranking.py",
        "disc = torch.relu(fake + margin - real)",
        "disc = torch.relu(real + margin - fake)",
        ("tests/test_ranking.py",),
    ),
    Mutation(
        "GoGAN Eq. 4: the 2-epsilon dropped to epsilon",
        "rankplug/functional/ranking.py",
        "prev_fake + 2.0 * margin - real",
        "prev_fake + margin - real",
        ("tests/test_ranking.py",),
    ),
    Mutation(
        "gradient penalty: norm over dim=1 of the 4-D gradient (authors' bug)",
        "rankplug/functional/penalty.py",
        "norms = torch.linalg.vector_norm(grad.flatten(1), ord=2, dim=1)",
        "norms = torch.linalg.vector_norm(grad, ord=2, dim=1).flatten(1).mean(dim=1)",
        ("tests/test_penalty.py",),
    ),
    Mutation(
        "gradient penalty: GradScaler's scale not undone",
        "rankplug/functional/penalty.py",
        "grad = grad / scaler.get_scale()",
        "grad = grad",
        ("tests/test_penalty.py",),
    ),
    Mutation(
        "MBGAN Eq. 4: margin carries a gradient",
        "rankplug/functional/metric.py",
        "    with torch.no_grad():\n        diff = ",
        "    if True:\n        diff = ",
        ("tests/test_metric.py",),
    ),
    Mutation(
        "MBGAN Eq. 1: anchor-positive and anchor-fake distances swapped",
        "rankplug/functional/metric.py",
        "margin + embedding_distance(anchor, positive) - embedding_distance(anchor, fake)",
        "margin + embedding_distance(anchor, fake) - embedding_distance(anchor, positive)",
        ("tests/test_metric.py",),
    ),
    Mutation(
        "MBGAN distance: plain norm (NaN gradient at coincidence)",
        "rankplug/functional/metric.py",
        "    return torch.where(positive, safe.sqrt(), torch.zeros_like(squared))",
        "    return squared.sqrt()",
        ("tests/test_metric.py",),
    ),
    Mutation(
        "AAM: cos(theta + m) through arccos",
        "rankplug/functional/angular.py",
        "shifted = c * cos_m - sin_theta * sin_m",
        "shifted = torch.cos(torch.acos(c) + margin)",
        ("tests/test_angular.py",),
    ),
    Mutation(
        "AAM: ArcFace fallback past pi dropped",
        "rankplug/functional/angular.py",
        "return torch.where(c >= -cos_m, shifted, c - margin * sin_m)",
        "return shifted",
        ("tests/test_angular.py",),
    ),
    Mutation(
        "AAM: margin added to every class, not only the target",
        "rankplug/functional/angular.py",
        "return (scale * c).scatter(1, index, scale * target_cos)",
        "return scale * cosine_with_margin(c, margin)",
        ("tests/test_angular.py",),
    ),
    Mutation(
        "AAM multi-label: no margin on negative attributes",
        "rankplug/functional/angular.py",
        "negative = -cosine_with_margin(-c, margin)",
        "negative = c",
        ("tests/test_angular.py",),
    ),
    Mutation(
        "AAM head: weights not normalised",
        "rankplug/heads.py",
        "weight = torch.nn.functional.normalize(self.weight.flatten(1).to(dtype), dim=1)",
        "weight = self.weight.flatten(1).to(dtype)",
        ("tests/test_angular.py",),
    ),
]


def run_mutation(mutation: Mutation) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(
            ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".hypothesis", "*.egg-info")
        )
        target = copy / mutation.path
        source = target.read_text()
        count = source.count(mutation.old)
        if count != 1:
            raise SystemExit(f"mutation {mutation.name!r}: expected the text once in {mutation.path}, found {count}")
        target.write_text(source.replace(mutation.old, mutation.new))
        start = time.perf_counter()
        # The copy comes first on sys.path, so `import rankplug` loads the mutated code.
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-header", *mutation.tests],
            cwd=copy,
            env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin", "HYPOTHESIS_PROFILE": "default"},
            capture_output=True,
            text=True,
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
        return {
            "mutation": mutation.name,
            "file": mutation.path,
            "caught": result.returncode == 1,
            "pytest_exit_code": result.returncode,
            "first_failing_test": lines[0].split(" ")[1] if lines else None,
            "seconds": round(time.perf_counter() - start, 1),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results = []
    for mutation in MUTATIONS:
        row = run_mutation(mutation)
        results.append(row)
        verdict = "caught" if row["caught"] else f"SURVIVED (pytest exit {row['pytest_exit_code']})"
        print(f"{verdict:<28} {row['mutation']:<70} {row['first_failing_test'] or ''}", flush=True)
    survived = [r for r in results if not r["caught"]]
    print(f"\n{len(results) - len(survived)} of {len(results)} mutations caught")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
