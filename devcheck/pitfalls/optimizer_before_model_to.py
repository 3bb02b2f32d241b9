"""An optimizer built before a move that replaces the model's Parameter objects."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devcheck.pitfalls._base import Fix, Pitfall, Symptom

if TYPE_CHECKING:
    import torch


def _step_changes_weights(net: torch.nn.Linear, opt: torch.optim.Optimizer,
                          dev: torch.device) -> bool:
    import torch

    X = torch.randn(16, 4, device=dev, dtype=torch.float64)
    y = torch.randint(0, 2, (16,), device=dev)
    before = net.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(net(X), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return not torch.equal(before, net.weight.detach())


def reproduce(device: str) -> None:
    import torch

    dev = torch.device(device)
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)  # built too early
    old = torch.__future__.get_overwrite_module_params_on_conversion()
    # With this documented switch (torch says it may become the default) Module._apply
    # replaces Parameters instead of updating them, as moves to some devices already do.
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        net.to(dev, torch.float64)
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(old)
    if not _step_changes_weights(net, opt, dev):
        held = {id(p) for g in opt.param_groups for p in g["params"]}
        live = sum(id(p) in held for p in net.parameters())
        raise RuntimeError(
            "optimizer.step() did not change the model's weights: the optimizer holds "
            f"parameters the model no longer uses ({live} of "
            f"{len(list(net.parameters()))} shared)"
        )


def fixed(device: str) -> str:
    import torch

    dev = torch.device(device)
    net = torch.nn.Linear(4, 2)
    old = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        net.to(dev, torch.float64)
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(old)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)  # after the move
    if not _step_changes_weights(net, opt, dev):
        raise RuntimeError("weights did not change")
    return "optimizer built after .to(): the step updated the weights"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="optimizer_before_model_to",
    title="Optimizer created before the model is moved/converted",
    needs=("cpu", "cuda", "mps"),
    symptoms=(
        Symptom(r"optimizer\.step\(\) did not change the model's weights",
                "did not change the model's weights", "RuntimeError: optimizer.step() did "
                "not change the model's weights: the optimizer holds parameters the model no "
                "longer uses (0 of 2 shared)"),
        Symptom(r"optimizer got an empty parameter list", "empty parameter list",
                "ValueError: optimizer got an empty parameter list", weight=0.5),
    ),
    mechanism=(
        "An optimizer keeps references to the Parameter objects it was given. Module.to() "
        "keeps Parameter identity for CPU<->CUDA moves (param.data is swapped), so the "
        "common order usually works; but when _apply must replace Parameters (moves to "
        "some devices such as meta, torch.__future__.set_overwrite_module_params_on_"
        "conversion(True), load_state_dict(assign=True)), the optimizer updates orphans: "
        "no error, the loss just never improves."
    ),
    source="torch/nn/modules/module.py Module._apply (p_should_use_set_data / "
    "Parameter replacement)",
    fixes=(
        Fix("Move/convert the model first, then build the optimizer",
            "net = net.to(device)\noptimizer = torch.optim.SGD(net.parameters(), lr=0.1)"),
    ),
    hints=("optimizer", "param_groups"),
    cpu_note="runs anywhere: the Parameter replacement is forced with a documented switch",
)
