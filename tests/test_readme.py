"""The README's code examples run as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(name: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- readme-example: {name} -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, f"README has no example {name!r}"
    return match.group(1)


def test_stage_loop_example_runs_and_ranks_the_stages(tmp_path, monkeypatch):
    code = readme_example("stage-loop")
    body = [line for line in code.splitlines() if line.strip() and not line.startswith(("import", "from"))]
    assert len(body) <= 30, len(body)
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "example.py"
    script.write_text(code)
    namespace = runpy.run_path(str(script))
    stages = namespace["stages"]
    assert stages.stage == 3
    assert (tmp_path / "runs" / "toy" / "stage_manager.pt").is_file()
    for record in stages.history[1:]:
        # RankGAN's ladder at the end of stages 2 and 3: D_i(x) > D_i(G_i(z)) > D_i(G_{i-1}(z)).
        assert record["real"][-1] > record["fake"][-1] > record["prev_fake"][-1], record
        assert record["markers"]["m_high"] >= record["markers"]["m_low"]


def test_readme_shows_the_test_command():
    assert "python -m pytest" in README.read_text()
