"""Upper bounds of the trainer's numbers, shared by the CLI and TrainConfig.

A module of its own because the CLI must not import torch (softmax.config does) to build
its options.
"""

from __future__ import annotations

# The parameters are float32: a larger step cannot even be represented (torch raises
# "value cannot be converted to type float without overflow" mid-epoch).
LR_MAX = 3.4028234663852886e38
# One epoch of Fashion-MNIST takes >= 0.05 s; a million is years, and a bigger number
# breaks the plot's axis (numpy cannot hold it) after a whole epoch of work.
EPOCHS_MAX = 1_000_000
