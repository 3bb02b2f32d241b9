"""``softmax train`` and ``softmax predict``: parse, call softmax.train, print; no logic here.

User errors (bad device, missing or damaged data, a diverging loss, a checkpoint that does not
fit) end with one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps."


def _user_errors() -> tuple[type[BaseException], ...]:
    from devcheck.guard import LabelRangeError, NonFiniteLossError, PlacementError
    from softmax.data import DataError
    from softmax.train import CheckpointError, DeviceError

    return (DeviceError, DataError, NonFiniteLossError, PlacementError, LabelRangeError,
            CheckpointError)


@click.group()
def cli() -> None:
    """Softmax regression on Fashion-MNIST (d2l ch. 3.6), correct on every device."""


@cli.command()
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=0.1, show_default=True, type=float)
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="Dataset root (torchvision layout). Default: $SOFTMAX_DATA_ROOT or ./data.")
@click.option("--loader", default="tensor", show_default=True,
              type=click.Choice(["tensor", "dataloader"]),
              help="tensor: whole dataset resident on the device; dataloader: the book's.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(min=0),
              help="DataLoader worker processes (--loader dataloader only).")
@click.option("--model", "model_kind", default="scratch", show_default=True,
              type=click.Choice(["scratch", "concise"]))
@click.option("--metrics-json", default=None, type=click.Path(dir_okay=False),
              help="Write every epoch's figures, the device and the settings as JSON.")
@click.option("--plot", default=None, type=click.Path(dir_okay=False),
              help="PNG rewritten each epoch. Default: <checkpoint-dir>/curves.png.")
@click.option("--checkpoint-dir", default="runs/softmax", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--resume", is_flag=True, help="Continue from the last complete epoch.")
@click.option("--no-guard", is_flag=True, help="Turn the per-step placement guard off.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--lr-schedule", default="anneal", show_default=True,
              type=click.Choice(["anneal", "constant"]),
              help="constant: the book's; anneal: constant, then to 0 over the last epoch.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="CPU threads for torch. Default: 1 with --loader tensor on cpu (fastest for "
                   "these small matmuls), torch's default otherwise.")
def train(epochs: int, lr: float, batch_size: int, device: str, data_root: str | None,
          loader: str, workers: int, model_kind: str, metrics_json: str | None,
          plot: str | None, checkpoint_dir: str, resume: bool, no_guard: bool,
          seed: int, lr_schedule: str, threads: int | None) -> None:
    """Train for --epochs, printing and plotting each epoch, checkpointing atomically."""
    from softmax.plot import LivePlot
    from softmax.train import EpochMetrics, TrainConfig, train_ch3

    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, device=device,
                         data_root=data_root, loader=loader, workers=workers, model=model_kind,
                         metrics_json=metrics_json, plot=plot, checkpoint_dir=checkpoint_dir,
                         resume=resume, guard=not no_guard, seed=seed,
                         lr_schedule=lr_schedule, threads=threads)
    plot_path = Path(plot) if plot else Path(checkpoint_dir) / "curves.png"
    live = LivePlot(plot_path, epochs=epochs, notebook=False,
                    title=f"softmax regression ({model_kind})")

    def on_epoch(m: EpochMetrics) -> None:
        path = live.add(m.epoch, (m.train_loss, m.train_acc, m.test_acc))
        click.echo(f"  curves: {path}")

    _writable_dirs(checkpoint_dir=checkpoint_dir, metrics_json=metrics_json,
                   plot=str(plot_path))
    try:
        result = train_ch3(config, on_epoch=on_epoch, log=click.echo)
    except _user_errors() as exc:
        raise click.ClickException(_with_checkpoint_note(str(exc), checkpoint_dir)) from None
    except OSError as exc:
        raise _os_error(exc, "--data-root, --checkpoint-dir, --metrics-json and --plot"
                        ) from None
    except KeyboardInterrupt:
        click.echo("interrupted; --resume continues from the last complete epoch", err=True)
        raise SystemExit(130) from None
    if result.epochs:
        last = result.epochs[-1]
        click.echo(f"final: test acc {last.test_acc:.4f} after {last.epoch} epochs on "
                   f"{result.device}; checkpoint {result.checkpoint}")
    if metrics_json:
        click.echo(f"metrics: {metrics_json}")


def _writable_dirs(**paths: str | None) -> None:
    """Fail before the first epoch, not after it, when an output cannot be written."""
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
    return click.ClickException(
        f"{exc.filename or 'a file'}: {exc.strerror or exc}; expected a path this user can "
        f"read and write. Fix: check {options}")


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
              help="How many test images to draw.")
@click.option("--out", default="predictions.png", show_default=True,
              type=click.Path(dir_okay=False))
def predict(checkpoint: str, device: str, data_root: str | None, n: int, out: str) -> None:
    """Draw the first -n test images with true/predicted labels (the book's predict_ch3)."""
    from softmax.predict import predict_ch3

    try:
        _writable_dirs(out=out)
        result = predict_ch3(Path(checkpoint), device, data_root, n, Path(out))
    except _user_errors() as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise _os_error(exc, "--checkpoint, --data-root and --out") from None
    click.echo(f"{result.wrong} of {result.n} wrong on {result.device}; grid: {result.path}")


def main() -> None:
    cli()
