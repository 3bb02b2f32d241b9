"""The acceptance run: the learner's notebook, this project's own code, public examples.

tests/data/lint/learner_d2l_3_6.ipynb is the learner's code from ../shared/seed/, cell by
cell as they ran it; each pitfall it contains must be reported at its cell and line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devcheck.lint import RULES, lint_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "lint"
LEARNER = DATA / "learner_d2l_3_6.ipynb"


def _cell_line(needle: str) -> tuple[int, int]:
    """(code-cell number, 1-based line) of the first line containing ``needle``."""
    nb = json.loads(LEARNER.read_text(encoding="utf-8"))
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for n, cell in enumerate(code_cells, 1):
        for i, line in enumerate("".join(cell["source"]).splitlines(), 1):
            if needle in line:
                return n, i
    raise AssertionError(needle)


def test_learner_notebook_pitfalls_are_found_at_their_cells() -> None:
    result = lint_file(LEARNER, RULES)
    assert result.errors == []
    found = {(f.rule, f.cell, f.line) for f in result.findings}
    expected = {
        ("default_device_sampler_generator",
         *_cell_line("data.DataLoader(mnist_train, batch_size=batch_size, shuffle=True")),
        ("default_device_not_applied", *_cell_line("trans = [transforms.ToTensor()]")),
        ("default_device_not_applied", *_cell_line("W = torch.normal(0, 0.01")),
        ("unstable_softmax", *_cell_line("return X_exp / partition")),
        ("hidden_host_sync", *_cell_line("metric.add(l.sum(), accuracy(y_hat, y)")),
    }
    assert found == expected
    sync = next(f for f in result.findings if f.rule == "hidden_host_sync")
    # Points into the other cells where the syncs really happen.
    assert "Accumulator.add runs float(b) at cell 9" in sync.message
    assert "accuracy runs float(cmp.type(y.dtype).sum()) at cell 7" in sync.message
    sampler = next(f for f in result.findings if f.rule == "default_device_sampler_generator")
    assert "set_default_device('cuda') (cell 1, line 10)" in sampler.message


def test_evaluation_loop_and_notebook_plotting_are_not_flagged() -> None:
    rules = {f.rule for f in lint_file(LEARNER, RULES).findings}
    assert "notebook_plot_in_script" not in rules  # it is a notebook
    assert "cuda_available_but_unused" not in rules  # set_default_device does move things
    assert "no_cpu_fallback" not in rules  # is_available() is checked


# The project's own code has no findings at all. What is kept on purpose (the book's softmax in
# softmax/book.py; failures 3-5 that learner_softmax_fixed.py leaves as the book wrote them)
# carries a `# devcheck: ignore[ID]` on its line, so the exception is visible where it is.
@pytest.mark.parametrize("target", ["softmax", "examples/learner_softmax_fixed.py"])
def test_project_code_has_no_findings(target: str) -> None:
    from devcheck.lint.source import iter_files

    unexpected = []
    for path in iter_files([ROOT / target]):
        result = lint_file(path, RULES, str(path.relative_to(ROOT)))
        assert result.errors == [], result.errors
        unexpected += [f"{f.location}: {f.rule} {f.message}" for f in result.findings]
    assert unexpected == []


@pytest.mark.parametrize("path", sorted((DATA / "public").glob("*.py")), ids=lambda p: p.name)
def test_public_examples_expected_findings(path: Path) -> None:
    """Well-known public training scripts: only the findings listed in their header."""
    header = path.read_text(encoding="utf-8").split("\n\n", 1)[0]
    expected = sorted(line.split("expect:", 1)[1].strip() for line in header.splitlines()
                      if "expect:" in line)
    found = sorted(f"{f.rule} {f.line}" for f in lint_file(path, RULES).findings)
    assert found == expected
