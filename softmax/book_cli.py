"""``softmax train --book``: parse-side glue between the click command and softmax.book.

Kept out of softmax/cli.py so the command module stays thin: this builds the book's settings
from the validated :class:`softmax.config.TrainConfig`, draws the curves, prints each epoch and
turns the book path's errors into the same one-line messages as the fast path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def book_config(config: Any) -> Any:
    """The settings --book honours, taken from the already validated TrainConfig."""
    from softmax.book_run import BookConfig

    return BookConfig(epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                      device=config.device, data_root=config.data_root,
                      workers=config.workers, seed=config.seed, guard=config.guard,
                      checkpoint_dir=config.checkpoint_dir, metrics_json=config.metrics_json)


def train_book(config: Any, user_errors: tuple[type[BaseException], ...],
               writable_dirs: Callable[..., None]) -> None:
    """Run the book's code path with the command line's outputs; errors end in one line."""
    from devcheck.fileio import OutputError
    from softmax.book import BookEpoch
    from softmax.book_run import run_book
    from softmax.cli import epochs_text
    from softmax.devices import cpu_threads
    from softmax.plot import LivePlot

    plot_path = config.plot_path
    writable_dirs(checkpoint_dir=config.checkpoint_dir, metrics_json=config.metrics_json,
                  plot=str(plot_path) if plot_path else None)
    live = LivePlot(plot_path, epochs=config.epochs, notebook=False,
                    title="softmax regression (the book's code, --book)")

    def on_epoch(m: BookEpoch) -> None:
        path = live.add(m.epoch, (m.train_loss, m.train_acc, m.test_acc))
        if path is not None:
            click.echo(f"  curves: {path}")

    try:
        with cpu_threads(config.threads):
            result = run_book(book_config(config), on_epoch=on_epoch, log=click.echo)
    except user_errors as exc:
        raise click.ClickException(str(exc)) from None
    except OutputError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        from devcheck.fileio import describe_os_error

        raise click.ClickException(
            f"{exc.filename or 'a file'}: {describe_os_error(exc)}; expected a path this user "
            f"can read and write. Fix: check --data-root, --checkpoint-dir, --metrics-json "
            f"and --plot") from None
    except KeyboardInterrupt:
        click.echo("interrupted; --book starts again from epoch 1 (the checkpoint of the last "
                   "complete epoch is kept)", err=True)
        raise SystemExit(130) from None
    if result.epochs:
        last = result.epochs[-1]
        click.echo(f"final: test acc {last.test_acc:.4f} after {epochs_text(last.epoch)} on "
                   f"{result.device} (the book's code path); checkpoint "
                   f"{result.checkpoint or '(none: no folder)'}")
    if config.metrics_json and result.epochs:
        click.echo(f"metrics: {config.metrics_json}")
