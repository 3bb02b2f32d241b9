"""``devcheck lint``: parse, call, render. Never imports torch.

Exit codes: 0 no findings, 1 findings, 2 usage error or a file that could not be read or
parsed (every other file is still checked and reported).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from devcheck.lint.report import LintRun


def _ids(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    from devcheck.lint import RULES

    known = [r.id for r in RULES]
    ids = [i.strip() for v in values for i in v.split(",") if i.strip()]
    bad = [i for i in ids if i not in known]
    if bad:
        raise click.BadParameter(
            f"unknown rule id {', '.join(map(repr, bad))}; expected one of: {', '.join(known)} "
            "(see docs/lint.md)", ctx=ctx, param=param)
    return ids


def _write(path: str, data: bytes) -> str | None:
    """Write a fixed file atomically, keeping its permissions; the error text on failure."""
    from devcheck.fileio import OutputError, atomic_write_bytes, read_only_fs

    if not os.path.isfile(path):  # `lint --fix <(cmd)`: a pipe cannot take the fixed code
        return (f"cannot write fixed file {path}: it is not a regular file (a pipe or "
                "device); use --diff to see the fixes")
    st = os.stat(path)
    if read_only_fs(path):
        return f"cannot write fixed file {path}: it is on a read-only filesystem; fix a copy"
    if not st.st_mode & 0o222:
        # the rename would replace a file its owner made read-only (root ignores modes)
        return (f"cannot write fixed file {path}: it is read-only (mode "
                f"{st.st_mode & 0o777:04o}); make it writable (chmod u+w {path}) to --fix it")
    if not os.access(path, os.W_OK):
        return (f"cannot write fixed file {path}: permission denied (owned by uid "
                f"{st.st_uid}, mode {st.st_mode & 0o777:04o}); run as its owner or fix a copy")
    try:
        atomic_write_bytes(path, data, what="fixed file")
        os.chmod(path, st.st_mode & 0o7777)
    except (OutputError, OSError) as exc:
        return str(exc)
    return None


def run_lint(paths: list[Path], select: list[str], ignore: list[str], fix: bool,
             diff: bool) -> LintRun:
    """Lint (and optionally fix) every file under ``paths``; the CLI only prints the result."""
    from devcheck.lint import RULES, ParseError, lint_file, lint_source
    from devcheck.lint.engine import fixed_file, unified_diff
    from devcheck.lint.source import iter_files, read_notebook, read_python

    rules = [r for r in RULES if (not select or r.id in select) and r.id not in ignore]
    run = LintRun()
    for path in iter_files(paths):
        run.files_checked += 1
        result = lint_file(path, rules, str(path))
        change = fixed_file(result) if (fix or diff) else None
        if change is not None and diff:
            run.diffs.append(unified_diff(change))
        elif change is not None:
            problem = _write(str(path), change.data)
            if problem:
                result.errors.append(ParseError(str(path), problem))
            else:
                reread = read_notebook if path.suffix == ".ipynb" else read_python
                before = len(result.findings)
                result = lint_source(reread(str(path), change.data), rules)
                run.fixed += before - len(result.findings)
                run.files_fixed += 1
        run.findings.extend(result.findings)
        run.errors.extend(result.errors)
    return run


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--select", multiple=True, callback=_ids, metavar="IDS",
              help="Only these rules (comma-separated rule ids; repeatable).")
@click.option("--ignore", multiple=True, callback=_ids, metavar="IDS",
              help="Skip these rules (comma-separated rule ids; repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--fix", is_flag=True,
              help="Apply the mechanical fixes (map_location=, weights_only=True, x = x.to(d)).")
@click.option("--diff", is_flag=True,
              help="Print the fixes as a unified diff and change nothing.")
@click.option("--list-rules", is_flag=True, help="List the rules ([*]: --fix can repair) and exit.")
@click.pass_context
def lint(ctx: click.Context, paths: tuple[Path, ...], select: list[str], ignore: list[str],
         as_json: bool, fix: bool, diff: bool, list_rules: bool) -> None:
    """Find device pitfalls in .py files and notebooks before they run.

    PATHS are files or directories (default: the current directory); directories are
    searched for .py and .ipynb files, skipping virtual environments, .git and build
    output. Silence one line with `# noqa: RULE_ID` (or a bare `# noqa`). Every rule id is
    a pitfall id: `devcheck pitfalls show RULE_ID` explains it.
    """
    from devcheck.lint.report import render_json, render_text

    if list_rules:
        from devcheck.lint import RULES

        for r in RULES:
            click.echo(f"{r.id:34s}{' [*]' if r.fixable else '    '} {r.summary}")
        click.echo("Details, examples and fixes: docs/lint.md; devcheck pitfalls show ID")
        return
    roots = list(paths) or [Path(".")]
    for p in roots:
        if not p.exists():
            raise click.BadParameter(
                f"path '{p}' does not exist; expected a .py file, an .ipynb notebook or a "
                "directory", ctx=ctx, param_hint="PATHS")
    run = run_lint(roots, select, ignore, fix, diff)
    if as_json:
        click.echo(render_json(run))
    else:
        for d in run.diffs:
            click.echo(d, nl=False)
        click.echo(render_text(run, fix_mode=fix and not diff))
    ctx.exit(run.exit_code)
