"""The README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_exactly_the_readme_test_command():
    install, tests = readme_commands()[:2]
    assert "pytest" in tests and "pip install torch==2.13.0" in install
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
