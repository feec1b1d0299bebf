"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    return [line for block in blocks for line in block.splitlines()
            if line and not line.startswith("#")]  # fmt: skip


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_readme_commands_pin_the_cpu_torch_build():
    setup = [c for c in readme_commands() if c.startswith("pip install torch==")]
    assert len(setup) == 3 and all("torch==2.13.0" in c for c in setup)  # demo, tests, app


def test_readme_python_uses_only_the_front_door():
    """Python examples reach the package through `import mask2anomaly as m2a` and names in
    `m2a.__all__` only (no deep imports)."""
    import mask2anomaly

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    code = "\n".join(blocks)
    assert blocks and "m2a." in code
    assert not re.search(r"from mask2anomaly[.\w]* import|import mask2anomaly\.", code)
    used = set(re.findall(r"\bm2a\.(\w+)", code)) - {"__all__"}
    assert used <= set(mask2anomaly.__all__), used - set(mask2anomaly.__all__)
