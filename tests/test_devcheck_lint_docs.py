"""docs/lint.md is generated from the rules; the pre-commit hook and CI example exist."""

from __future__ import annotations

from pathlib import Path

from devcheck.lint import RULES
from devcheck.lint.docs import DOC, main, render

ROOT = Path(__file__).resolve().parents[1]


def test_docs_page_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), \
        "docs/lint.md is stale: run python -m devcheck.lint.docs"
    assert main(["--check"]) == 0


def test_docs_cover_every_rule_with_example_fix_and_pitfall_command() -> None:
    text = render()
    for rule in RULES:
        assert f"### `{rule.id}`" in text
        assert rule.example.rstrip() in text and rule.fixed.rstrip() in text
        assert f"devcheck pitfalls show {rule.id}" in text


def test_pre_commit_hook_runs_devcheck_lint_on_python_and_notebooks() -> None:
    text = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "id: devcheck-lint" in text and "entry: devcheck lint" in text
    assert "types_or: [python, jupyter]" in text


def test_ci_docs_show_the_lint_step() -> None:
    text = (ROOT / "docs" / "ci.md").read_text()
    assert "## Lint: device pitfalls before they run" in text and "devcheck lint" in text
