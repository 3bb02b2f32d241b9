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
    return None


def load_ipython_extension(ipython: Any) -> None:
    if hasattr(ipython, _SAVED):
        return  # already loaded
    setattr(ipython, _SAVED, (getattr(ipython, "custom_exceptions", ()),
                              getattr(ipython, "CustomTB", None)))
    ipython.set_custom_exc((Exception,), _handler)


def unload_ipython_extension(ipython: Any) -> None:
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
