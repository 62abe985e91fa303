"""README.md's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md opens with a sh block of set-up commands"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_has_exactly_two_setup_commands():
    serve, test = readme_commands()
    assert serve.endswith("mediagate serve")
    assert "pytest" in test


def test_ci_runs_the_readme_test_command():
    _, test = readme_commands()
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_ci_lints_and_checks_formatting_and_types_before_the_tests():
    _, test = readme_commands()
    steps = [step.strip() for step in test.split("&&")]
    lint = steps.index(".venv/bin/ruff check src tests bench examples")
    formatting = steps.index(".venv/bin/ruff format --check src tests bench examples")
    types = steps.index(".venv/bin/mypy")  # strict on src/, see [tool.mypy] in pyproject.toml
    tests = next(n for n, step in enumerate(steps) if step.startswith(".venv/bin/pytest -q"))
    assert lint < formatting < types < tests


def test_every_setting_is_documented():
    from mediagate.config import env_names

    docs = "".join(
        (ROOT / "docs" / name).read_text() for name in ("configuration.md", "operations.md")
    )
    assert [name for name in env_names().values() if f"`{name}`" not in docs] == []


def test_ci_runs_the_store_tier_on_rgw_over_http_and_https_after_the_readme_command():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    _, test = readme_commands()
    tiers = [n for n, line in enumerate(lines) if line.startswith("MEDIAGATE_TEST_S3=")]
    assert [lines[n].split()[0] for n in tiers] == [
        "MEDIAGATE_TEST_S3=rgw",
        "MEDIAGATE_TEST_S3=rgw-https",
    ]
    assert all(re.search(r"-m \"?store\b", lines[n]) for n in tiers)
    assert lines.index(test) < tiers[0]
    assert "radosgw ceph-mon ceph-osd" in "\n".join(lines)  # installed when missing
