"""devcheck.cli.params.FiniteFloat: nan/inf and out-of-range floats are one usage error."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from devcheck.cli.params import FiniteFloat


@click.command()
@click.option("--timeout", type=FiniteFloat(0, 3600, low_open=True), default=5.0)
def cmd(timeout: float) -> None:
    click.echo(f"ok {timeout:g}")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e12", "-5", "0", "abc", "NaN"])
def test_rejected_with_one_usage_line(value: str) -> None:
    result = CliRunner().invoke(cmd, ["--timeout", value])
    assert result.exit_code == 2
    assert "Invalid value for '--timeout'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("value", "seen"), [("0.5", "ok 0.5"), ("3600", "ok 3600"),
                                             ("1e-3", "ok 0.001")])
def test_accepted(value: str, seen: str) -> None:
    result = CliRunner().invoke(cmd, ["--timeout", value])
    assert result.exit_code == 0 and result.output.strip() == seen


def test_the_message_names_the_range() -> None:
    result = CliRunner().invoke(cmd, ["--timeout", "inf"])
    assert "(0, 3600]" in result.output
