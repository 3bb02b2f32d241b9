"""``softmax train`` and ``softmax predict``: parse, call softmax.train, print; no logic here.

Every bad input ends with one line on stderr and no traceback: a bad option value exits 2
(click's usage errors, shortened to one line), anything found later (bad device, missing or
damaged data, a diverging loss, a checkpoint that does not fit, a busy checkpoint folder, a
full disk) exits 1. A closed stdout (``softmax train | head -1``) ends the run quietly, as
it ends other Unix tools (exit 141, 128 + SIGPIPE); Ctrl-C at any point exits 130.

torch is imported first, as a step of its own (softmax.startup): a broken install is one
line naming torch and the fix, and a crash in native code prints the Python stack.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from devcheck.cli.params import FiniteFloat
from softmax.limits import EPOCHS_MAX, LR_MAX
from softmax.startup import EXIT_INTERRUPTED, enable_faulthandler, start, stdout_closed

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps."


def _user_errors() -> tuple[type[BaseException], ...]:
    from devcheck.guard import LabelRangeError, NonFiniteLossError, PlacementError
    from softmax.checkpoint import CheckpointError
    from softmax.data import DataError
    from softmax.devices import DeviceError
    from softmax.distributed import DistributedError

    return (DeviceError, DataError, NonFiniteLossError, PlacementError, LabelRangeError,
            CheckpointError, DistributedError)


class _OneLineUsageError(click.ClickException):
    exit_code = 2


class _OneLineGroup(click.Group):
    """Click's usage errors print a usage block, a hint and the error (3+ lines); the
    contract here is one line naming the option, the value and what was expected."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            raise _OneLineUsageError(exc.format_message().rstrip(".") + where) from None
        except KeyboardInterrupt:  # Ctrl-C before the first epoch (imports, device, data)
            click.echo("interrupted", err=True)  # click alone says "Aborted!" and exits 1
            raise SystemExit(EXIT_INTERRUPTED) from None


def _start() -> None:
    """What every command does first: torch's import as a step of its own, then the note
    about an unknown $MPLBACKEND, if any."""
    note = start()
    if note:
        click.echo(note, err=True)


@click.group(cls=_OneLineGroup)
def cli() -> None:
    """Softmax regression on Fashion-MNIST (d2l ch. 3.6), correct on every device."""


@cli.command()
@click.option("--epochs", default=10, show_default=True,
              type=click.IntRange(1, EPOCHS_MAX))
@click.option("--lr", default=0.1, show_default=True,
              type=FiniteFloat(0, LR_MAX, low_open=True),
              help="SGD learning rate, a finite number > 0 (float32: <= 3.4e38).")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="Dataset root (torchvision layout). Default: $SOFTMAX_DATA_ROOT or ./data.")
@click.option("--loader", default="tensor", show_default=True,
              type=click.Choice(["tensor", "dataloader"]),
              help="tensor: whole dataset resident on the device; dataloader: the book's.")
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="DataLoader worker processes (--loader dataloader and --book). Default: "
                   "the CPUs this process may use, at most 4 (the book's number).")
@click.option("--book", is_flag=True,
              help="Run the book's ch. 3.6 code as written (autograd, W as 784x10, "
                   "Accumulator, the DataLoader, constant lr), made device-correct and "
                   "guarded: softmax/book.py. Slower; the default path is the fast one.")
@click.option("--model", "model_kind", default="scratch", show_default=True,
              type=click.Choice(["scratch", "concise"]))
@click.option("--metrics-json", default=None, type=click.Path(dir_okay=False),
              help="Write every epoch's figures, the device and the settings as JSON.")
@click.option("--plot", default=None, type=click.Path(dir_okay=False),
              help="Image of the curves, rewritten each epoch; the suffix picks the format "
                   "(.png, .pdf, .svg...). Default: <checkpoint-dir>/curves.png.")
@click.option("--checkpoint-dir", default="runs/softmax", show_default=True,
              type=click.Path(file_okay=False),
              help="Holds last.pt and, while a run uses it, last.pt.lock (one trainer each).")
@click.option("--resume", is_flag=True, help="Continue from the last complete epoch.")
@click.option("--no-guard", is_flag=True, help="Turn the per-step placement guard off.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--lr-schedule", default="anneal", show_default=True,
              type=click.Choice(["anneal", "constant"]),
              help="constant: the book's; anneal: constant, then to 0 over the last epoch.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="CPU threads for torch, at most this machine's CPUs. Default: 1 with "
                   "--loader tensor on cpu (fastest for these small matmuls), torch's "
                   "default otherwise.")
@click.option("--watch", is_flag=True,
              help="Sample the GPUs and this process tree (devcheck, in a thread): print each "
                   "epoch's GPU utilisation and peak GPU memory, and record them under "
                   "\"watch\" in --metrics-json.")
def train(epochs: int, lr: float, batch_size: int, device: str, data_root: str | None,
          loader: str, workers: int | None, book: bool, model_kind: str,
          metrics_json: str | None, plot: str | None, checkpoint_dir: str, resume: bool,
          no_guard: bool, seed: int, lr_schedule: str, threads: int | None,
          watch: bool) -> None:
    """Train for --epochs, printing and plotting each epoch, checkpointing atomically."""
    _start()
    from softmax.config import ConfigError, TrainConfig

    if book:
        _book_conflicts()
        if watch:
            raise _OneLineUsageError("--watch cannot be combined with --book (it hooks the "
                                     "fast path's epochs). Fix: devcheck run -- softmax train "
                                     "--book ... samples the book's run as a whole")
        loader, lr_schedule = "dataloader", "constant"  # what --book runs, for the checks
    try:
        config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, device=device,
                             data_root=data_root, loader=loader, workers=workers,
                             model=model_kind, metrics_json=metrics_json, plot=plot,
                             checkpoint_dir=checkpoint_dir, resume=resume, guard=not no_guard,
                             seed=seed, lr_schedule=lr_schedule, threads=threads)
    except ConfigError as exc:
        raise _OneLineUsageError(exc.option_message()) from None
    try:
        if book:
            from softmax.book_cli import train_book

            _writable_files(metrics_json=config.metrics_json, plot=config.plot)
            train_book(config, _user_errors(), _writable_dirs)
        else:
            _train(config, watch)
    except BrokenPipeError:
        stdout_closed()


# Options --book cannot honour when given explicitly, and why (its defaults are ignored).
_NOT_WITH_BOOK = {
    "loader": ("tensor", "--book reads batches with the book's DataLoader"),
    "model_kind": ("concise", "--book is the from-scratch model of ch. 3.6"),
    "lr_schedule": ("anneal", "--book keeps the book's constant learning rate"),
    "resume": (True, "--book starts from epoch 1 (the fast path resumes)"),
}


def _book_conflicts() -> None:
    """One line for an option given together with --book that --book would ignore."""
    ctx = click.get_current_context()
    for name, (bad, why) in _NOT_WITH_BOOK.items():
        given = ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        if given and ctx.params.get(name) == bad:
            flag = "--" + {"model_kind": "model"}.get(name, name).replace("_", "-")
            value = "" if bad is True else f" {bad}"
            raise _OneLineUsageError(
                f"{flag}{value} cannot be combined with --book: {why}. Fix: drop {flag} "
                f"or drop --book")


def _train(config: Any, watch: bool = False) -> None:
    from devcheck.fileio import OutputError
    from softmax.plot import LivePlot
    from softmax.train import EpochMetrics, train_ch3

    plot_path = config.plot_path
    _writable_files(metrics_json=config.metrics_json, plot=config.plot)
    _writable_dirs(checkpoint_dir=config.checkpoint_dir,
                   plot=str(plot_path) if plot_path and not config.plot else None)
    live = LivePlot(plot_path, epochs=config.epochs, notebook=False,
                    title=f"softmax regression ({config.model})")

    watched: list[dict[str, Any]] = []  # --watch: each epoch's GPU figures

    def on_epoch(m: EpochMetrics) -> None:
        path = live.add(m.epoch, (m.train_loss, m.train_acc, m.test_acc))
        click.echo(f"  curves: {path}")
        if watched:
            from devcheck.run.epochs import describe

            click.echo(f"  watch: {describe(watched[-1])}")

    try:
        from softmax.data import locate
        from softmax.distributed import is_main_process, rank_prefix

        # say once where the data comes from (under torchrun: rank 0 alone)
        locate(config.data_root, log=click.echo if is_main_process() else lambda _: None)
        with _epoch_watch(watched) if watch else _no_watch() as extras:
            result = train_ch3(config, on_epoch=on_epoch, log=click.echo, epoch_extras=extras)
    except _user_errors() as exc:  # under torchrun prefixed "[rank R of N] "
        raise click.ClickException(rank_prefix() + _with_checkpoint_note(
            str(exc), config.checkpoint_dir)) from None
    except BrokenPipeError:
        raise
    except OutputError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise _os_error(exc, "--data-root, --checkpoint-dir, --metrics-json and --plot"
                        ) from None
    except KeyboardInterrupt:
        click.echo("interrupted; --resume continues from the last complete epoch", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if not is_main_process():  # under torchrun rank 0 alone reports
        return
    if result.epochs:
        last = result.epochs[-1]
        click.echo(f"final: test acc {last.test_acc:.4f} after {epochs_text(last.epoch)} on "
                   f"{result.device}; checkpoint {result.checkpoint or '(none: no folder)'}")
    if config.metrics_json and result.epochs:
        click.echo(f"metrics: {config.metrics_json}")


def epochs_text(n: int) -> str:
    """"1 epoch", "2 epochs": the count with its noun in the right number."""
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _writable_files(**paths: str | None) -> None:
    """A file the user named must go into a folder that exists: a typo such as
    ``--metrics-json nope/m.json`` must not silently create ``nope/`` (and the run's output
    then sit where nobody looks); fail before any work, naming the folder."""
    from devcheck.fileio import OutputError, check_writable

    for option, value in paths.items():
        if not value:
            continue
        flag = "--" + option.replace("_", "-")
        try:
            check_writable(value, flag)
        except OutputError as exc:
            raise click.ClickException(str(exc)) from None


def _writable_dirs(**paths: str | None) -> None:
    """Fail before the first epoch, not after it, when an output cannot be written; the
    checkpoint folder (and the default plot inside it) is created."""
    for option, value in paths.items():
        if not value:
            continue
        flag = "--" + option.replace("_", "-")
        directory = Path(value) if option == "checkpoint_dir" else Path(value).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".softmax-write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise click.ClickException(
                f"{flag} {value}: cannot write in {directory} ({exc.strerror or exc}); "
                f"expected a directory this user can create and write. Fix: pass another "
                f"{flag}") from None


def _os_error(exc: OSError, options: str) -> click.ClickException:
    """A file problem that got past the checks (disk full, permissions changed mid-run)."""
    from devcheck.fileio import describe_os_error

    return click.ClickException(
        f"{exc.filename or 'a file (see ' + options + ')'}: {describe_os_error(exc)}; expected "
        f"a path this user can read and write. Fix: check {options}")


def _with_checkpoint_note(message: str, checkpoint_dir: str | None) -> str:
    if "non-finite" in message and checkpoint_dir:
        path = Path(checkpoint_dir) / "last.pt"
        if path.exists():
            message += f" The last good checkpoint is kept: {path}."
    return message


@cli.command()
@click.option("--checkpoint", default="runs/softmax/last.pt", show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option("-n", "n", default=16, show_default=True, type=click.IntRange(1, 10000),
              help="How many test images to draw (pages of 128 beyond that).")
@click.option("--out", default="predictions.png", show_default=True,
              type=click.Path(dir_okay=False),
              help="Image file; the suffix picks the format. Several pages: out-01.png, ...")
def predict(checkpoint: str, device: str, data_root: str | None, n: int, out: str) -> None:
    """Draw the first -n test images with true/predicted labels (the book's predict_ch3)."""
    _start()
    try:
        _predict(checkpoint, device, data_root, n, out)
    except BrokenPipeError:
        stdout_closed()


def _predict(checkpoint: str, device: str, data_root: str | None, n: int, out: str) -> None:
    from devcheck.fileio import OutputError
    from softmax.plot import image_format
    from softmax.predict import predict_ch3

    try:
        image_format(out, "--out")
    except ValueError as exc:
        raise _OneLineUsageError(str(exc)) from None
    try:
        _writable_files(out=out)
        result = predict_ch3(Path(checkpoint), device, data_root, n, Path(out))
    except _user_errors() as exc:
        raise click.ClickException(str(exc)) from None
    except BrokenPipeError:
        raise
    except OutputError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise _os_error(exc, "--checkpoint, --data-root and --out") from None
    where = f"grid: {result.path}"
    if len(result.pages) > 1:
        where = (f"{len(result.pages)} pages of up to 128: {result.pages[0]} ... "
                 f"{result.pages[-1]}")
    click.echo(f"{result.wrong} of {result.n} wrong on {result.device}; {where}")


@contextlib.contextmanager
def _epoch_watch(seen: list[dict[str, Any]]) -> Iterator[Callable[[], dict[str, Any]]]:
    """--watch: devcheck samples in a thread; each epoch's end returns its figures
    (train_ch3 files them under "watch" in the metrics JSON; ``seen`` feeds the printout)."""
    from devcheck.run.epochs import EpochWatch

    with EpochWatch() as ew:
        def extras() -> dict[str, Any]:
            seen.append(ew.epoch_end())
            return seen[-1]

        yield extras


@contextlib.contextmanager
def _no_watch() -> Iterator[None]:
    yield None


def main() -> None:
    enable_faulthandler()
    cli()
