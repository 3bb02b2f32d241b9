"""``%load_ext devcheck``: explain device errors right under the notebook traceback.

Uses IPython's own hook for this (``set_custom_exc``): the handler first shows the
traceback exactly as IPython would, then, only when the error matches a pitfall, prints
the explanation below it. Unrelated errors look exactly as before. ``%unload_ext devcheck``
restores whatever handler was installed before.
"""

from __future__ import annotations

import sys
from typing import Any

_SAVED = "_devcheck_saved_custom_exc"
# One line on load, so a learner can tell the extension is active and what it will do.
CONFIRMATION = ("[devcheck] active: a traceback that matches a known device pitfall gets its "
                "cause and fix printed below it, other errors are left alone; "
                "%%devcheck_watch watches a cell's GPU use; %unload_ext devcheck turns it off")


def _handler(shell: Any, etype: type[BaseException], value: BaseException, tb: Any,
             tb_offset: int | None = None) -> Any:
    # exactly what IPython does without a custom handler (run_code's default branch)
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)
    try:
        from devcheck.pitfalls.explain import explain_exception, render

        matches = explain_exception(value, limit=3)
    except Exception as exc:  # the hook must never hide the user's own error
        print(f"[devcheck] could not analyse this error: {exc!r}", file=sys.stderr)
        return None
    if matches:
        print("\n[devcheck] " + render(matches, 0).replace("\n", "\n[devcheck] "))
        try:  # one line more when `devcheck lint` would have flagged the cell that raised
            from devcheck.lint.links import hint_for_exception

            hint = hint_for_exception(shell.user_ns.get("In", []), tb, [m.id for m in matches])
        except Exception:  # linting is a bonus: never let it disturb the explanation
            hint = None
        if hint:
            print(f"[devcheck] {hint}")
    return None


def _watch_magic(shell: Any) -> Any:
    """``%%devcheck_watch [-i SECONDS] [--plot FILE]``: sample the GPUs and this kernel's
    process tree while the cell runs, then print the devices used and the verdicts (the
    Watch stays in ``_devcheck_watch`` for ``.timeline`` / ``.plot()``)."""

    def devcheck_watch(line: str, cell: str) -> None:
        from devcheck.run.watcher import Watch, parse_magic_line

        try:
            interval, plot_path = parse_magic_line(line)
        except ValueError as exc:
            print(f"[devcheck] {exc}", file=sys.stderr)
            return
        w = Watch(interval, label="%%devcheck_watch")
        with w:
            shell.run_cell(cell)
        shell.user_ns["_devcheck_watch"] = w
        print(w.report())
        if plot_path:
            try:
                print(f"[devcheck] timeline plot: {w.plot(plot_path)}")
            except OSError as exc:
                print(f"[devcheck] {exc}", file=sys.stderr)

    return devcheck_watch


def load_ipython_extension(ipython: Any) -> None:
    if hasattr(ipython, "register_magic_function"):
        ipython.register_magic_function(_watch_magic(ipython), magic_kind="cell",
                                        magic_name="devcheck_watch")
    if hasattr(ipython, _SAVED):
        print("[devcheck] already active (%unload_ext devcheck turns it off)")
        return
    setattr(ipython, _SAVED, (getattr(ipython, "custom_exceptions", ()),
                              getattr(ipython, "CustomTB", None)))
    ipython.set_custom_exc((Exception,), _handler)
    print(CONFIRMATION)


def unload_ipython_extension(ipython: Any) -> None:
    magics = getattr(getattr(ipython, "magics_manager", None), "magics", None)
    if isinstance(magics, dict):  # %%devcheck_watch goes with the extension
        magics.get("cell", {}).pop("devcheck_watch", None)
    saved = getattr(ipython, _SAVED, None)
    if saved is None:
        return
    ipython.custom_exceptions, custom_tb = saved
    if custom_tb is None:
        try:
            del ipython.CustomTB  # back to the class's default method
        except AttributeError:
            pass
    else:
        ipython.CustomTB = custom_tb
    delattr(ipython, _SAVED)
