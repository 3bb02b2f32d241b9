"""Each lint rule on code it must flag and on look-alikes it must leave alone.

Snippets are small programs people really write (d2l, pytorch/examples, nanoGPT styles);
the negatives are the traps a naive pattern match falls into (nn.Module.to, a logging
guard, an evaluation loop, json.load, a stable softmax...).
"""

from __future__ import annotations

import textwrap

import pytest

from devcheck.lint import RULES, get_rule, lint_text, rule_for_pitfall


def ids(code: str, *, notebook: bool = False, rule: str | None = None) -> list[str]:
    rules = [get_rule(rule)] if rule else list(RULES)
    if notebook:
        import json
        cells = [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                  "source": textwrap.dedent(c).strip("\n")} for c in code.split("# %%")]
        code = json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    result = lint_text(code if notebook else textwrap.dedent(code), rules, notebook=notebook)
    assert not result.errors, result.errors
    return [f.rule for f in result.findings]


# (rule, code that must be flagged, code that must not be)
CASES: list[tuple[str, str, str]] = [
    ("default_device_sampler_generator", """
        import torch
        from torch.utils.data import DataLoader as DL
        if torch.cuda.is_available():
            torch.set_default_device("cuda")
        loader = DL(ds, batch_size=32, shuffle=True)
     """, """
        import torch
        from torch.utils.data import DataLoader as DL
        torch.set_default_device("cuda")
        loader = DL(ds, batch_size=32, shuffle=True,
                    generator=torch.Generator(device="cuda"))
        test = DL(ds, batch_size=32, shuffle=False)
     """),
    ("default_device_sampler_generator", """
        import torch as T
        from torch.utils import data
        def load():
            return data.random_split(ds, [0.8, 0.2])
        T.set_default_device(T.device("mps"))
        train, val = load()
     """, """
        import torch as T
        from torch.utils import data
        def load():
            return data.random_split(ds, [0.8, 0.2])
        train, val = load()
        T.set_default_device("cpu")
     """),
    ("default_device_sampler_generator", """
        import torch
        from torch.utils.data import DataLoader
        def setup():
            torch.set_default_device("cuda")
        setup()
        loader = DataLoader(ds, shuffle=True)
     """, """
        import torch
        from torch.utils.data import DataLoader
        def setup():
            torch.set_default_device("cuda")
        loader = DataLoader(ds, shuffle=True)
        setup()
     """),
    ("default_device_not_applied", """
        import torch
        import numpy as np
        torch.set_default_device(device)
        W = torch.normal(0, 0.01, size=(784, 10), requires_grad=True)
        X = torch.from_numpy(np.zeros(3))
     """, """
        import torch
        torch.set_default_device(device)
        W = torch.normal(0, 0.01, size=(784, 10), device=device, requires_grad=True)
        m = torch.normal(torch.zeros(3), 1.0)
     """),
    ("default_device_not_applied", """
        import torch
        from torchvision import transforms
        with torch.device("cuda"):
            t = transforms.ToTensor()
     """, """
        import torch
        from torchvision import transforms
        with torch.device("cpu"):
            t = transforms.ToTensor()
        t2 = transforms.ToTensor()
     """),
    ("tensor_to_not_inplace", """
        import torch
        for X, y in train_iter:
            X.to(device)
            y.cuda()
            loss(net(X), y)
     """, """
        import torch
        from torch import nn
        class Net(nn.Module):
            pass
        model = Net()
        model.to(device)
        head = nn.Linear(3, 4)
        head.cuda()
        self_made = make_thing()
        self_made.to(device)
        for X, y in train_iter:
            X, y = X.to(device), y.to(device)
     """),
    ("hidden_host_sync", """
        for step, (X, y) in enumerate(loader):
            loss = criterion(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()
     """, """
        for step, (X, y) in enumerate(loader):
            loss = criterion(model(X), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if step % log_every == 0:
                print(loss.item())
        for X, y in test_loader:
            correct += float((model(X).argmax(1) == y).sum())
        print(loss.item())
     """),
    ("hidden_host_sync", """
        class Acc:
            def add(self, *args):
                self.data = [a + float(b) for a, b in zip(self.data, args)]
        def train(loader):
            metric = Acc()
            for X, y in loader:
                l = loss(net(X), y)
                l.sum().backward()
                updater(X.shape[0])
                metric.add(l.sum(), y.numel())
     """, """
        def lr_at(step):
            return float(step) / 100
        def train(loader):
            for i, (X, y) in enumerate(loader):
                l = loss(net(X), y)
                l.sum().backward()
                opt.param_groups[0]["lr"] = lr_at(i)
                opt.step()
     """),
    ("gpu_checkpoint_on_cpu", """
        import torch as T
        state = T.load("model.pt", weights_only=True)
        scripted = T.jit.load("model_scripted.pt")
     """, """
        import json
        import torch
        from torch import load
        cfg = json.load(open("c.json"))
        state = load("model.pt", "cpu", weights_only=True)
        state = torch.load("model.pt", map_location=device, weights_only=True)
     """),
    ("torch_load_weights_only", """
        from torch import load
        ckpt = load(path, map_location="cpu")
     """, """
        import torch
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        old = torch.load(path, map_location="cpu", weights_only=False)
        pickle_load = pickle.load(f)
     """),
    ("spawn_needs_importable_main", """
        import torch
        from torch.utils.data import DataLoader
        loader = DataLoader(ds, batch_size=4, num_workers=4)
        for X in loader:
            pass
     """, """
        import torch
        from torch.utils.data import DataLoader
        def main():
            loader = DataLoader(ds, batch_size=4, num_workers=4)
            for X in loader:
                pass
        if __name__ == "__main__":
            main()
        quick = DataLoader(ds, batch_size=4, num_workers=0)
     """),
    ("cuda_available_but_unused", """
        import torch
        if torch.cuda.is_available():
            print("CUDA is available! PyTorch is using the GPU.")
        net = torch.nn.Linear(3, 4)
        for X, y in loader:
            l = loss(net(X), y)
     """, """
        import torch
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net = torch.nn.Linear(3, 4).to(device)
     """),
    ("no_cpu_fallback", """
        import torch
        net = Net().cuda()
        X = torch.zeros(3, device="cuda:0")
     """, """
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        net = Net().to(device)
        X = torch.zeros(3, device="cpu")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", 0)
        sync = torch.device("cuda") if use_gpu else torch.device("cpu")
     """),
    ("notebook_plot_in_script", """
        from IPython import display
        from d2l import torch as d2l
        animator = d2l.Animator(xlabel="epoch")
        display.display(fig)
        display.clear_output(wait=True)
     """, """
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        fig.savefig("curves.png")
        display = print
        display("done")
     """),
    ("unstable_softmax", """
        import torch
        def softmax(X):
            return torch.exp(X) / torch.exp(X).sum(1, keepdim=True)
        def softmax2(x):
            e = x.exp()
            return e / e.sum(dim=-1, keepdim=True)
     """, """
        import torch
        def softmax(X):
            X_exp = torch.exp(X - X.max(dim=1, keepdim=True).values)
            return X_exp / X_exp.sum(1, keepdim=True)
        def ratio(a, b):
            return torch.exp(a) / b
     """),
    ("ddp_missing_set_epoch", """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(ds)
        loader = DataLoader(ds, sampler=sampler)
        for epoch in range(args.epochs):
            for X, y in loader:
                step(X, y)
     """, """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(ds)
        eval_sampler = DistributedSampler(val, shuffle=False)
        loader = DataLoader(ds, sampler=sampler)
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for X, y in loader:
                step(X, y)
     """),
    ("ddp_missing_set_epoch", """
        from torch.utils.data import DataLoader, DistributedSampler
        def loaders(ds):
            return DataLoader(ds, sampler=DistributedSampler(ds))
        train = loaders(ds)
        for epoch in range(num_epochs):
            for X, y in train:
                step(X, y)
     """, """
        from torch.utils.data import DataLoader, DistributedSampler
        loader = RankLoader(DataLoader(ds, sampler=DistributedSampler(ds)))
        for epoch in range(num_epochs):
            for X, y in loader:
                step(X, y)
        for line in ("epoch 1", "epoch 2"):
            print(line)
     """),
    ("pin_memory_without_accelerator", """
        from torch.utils.data import DataLoader
        loader = DataLoader(ds, batch_size=64, pin_memory=True)
     """, """
        import torch
        from torch.utils.data import DataLoader
        loader = DataLoader(ds, batch_size=64, pin_memory=torch.cuda.is_available())
        other = DataLoader(ds, batch_size=64, pin_memory=True)  # the check above covers it
     """),
]


@pytest.mark.parametrize(("rule", "bad", "good"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_flags_the_bad_snippet_and_not_the_good_one(rule: str, bad: str,
                                                          good: str) -> None:
    assert rule in ids(bad, rule=rule)
    assert ids(good, rule=rule) == []


def test_every_rule_has_a_case() -> None:
    assert {r.id for r in RULES} == {c[0] for c in CASES}


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_rule_documents_itself_and_its_example_and_fix_behave(rule) -> None:  # type: ignore
    assert rule.summary and rule.why and rule.example and rule.fixed
    assert rule.id in ids(rule.example, rule=rule.id), "the documented example is not flagged"
    assert ids(rule.fixed, rule=rule.id) == [], "the documented fix is still flagged"
    assert rule_for_pitfall(rule.id) is not None


def test_every_rule_id_is_a_pitfall_id() -> None:
    """One vocabulary: `devcheck pitfalls show RULE_ID` must explain every rule."""
    from devcheck.pitfalls import REGISTRY

    missing = [r.id for r in RULES if r.id not in REGISTRY]
    assert missing == [], f"lint rules without a pitfall module: {missing}"


def test_messages_name_what_was_seen_and_the_fix() -> None:
    result = lint_text("import torch\nstate = torch.load(ckpt_path)\n", RULES)
    by_rule = {f.rule: f for f in result.findings}
    f = by_rule["gpu_checkpoint_on_cpu"]
    assert "torch.load(ckpt_path)" in f.message and "map_location" in f.fix
    assert (f.line, f.col, f.end_col) == (2, 9, 30)


def test_notebook_rules_see_across_cells_and_report_cells() -> None:
    code = """
        import torch
        torch.set_default_device('cuda')
        # %%
        from torch.utils.data import Dataset, DataLoader
        class MyDS(Dataset):
            pass
        # %%
        %matplotlib inline
        loader = DataLoader(MyDS(), shuffle=True, num_workers=2)
    """
    import json

    cells = [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
              "source": textwrap.dedent(c).strip("\n")} for c in code.split("# %%")]
    cells.insert(1, {"cell_type": "markdown", "metadata": {}, "source": "# not code"})
    nb = json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    result = lint_text(nb, RULES, path="nb.ipynb", notebook=True)
    assert not result.errors
    found = {(f.rule, f.cell, f.line) for f in result.findings}
    assert ("default_device_sampler_generator", 3, 2) in found
    assert ("spawn_needs_importable_main", 3, 2) in found
    assert all(f.location.startswith("nb.ipynb:cell ") for f in result.findings)


def test_notebook_plot_is_fine_in_a_notebook_and_spawn_guard_rule_is_script_only() -> None:
    code = """
        from IPython import display
        display.clear_output(wait=True)
        # %%
        from torch.utils.data import DataLoader
        loader = DataLoader(ds, num_workers=4)
    """
    assert ids(code, notebook=True) == []


def test_aliases_resolve_and_lookalikes_do_not_match() -> None:
    code = """
        import torch.utils.data as tud
        from torch.utils.data.dataloader import DataLoader as Loader
        import torch as T
        T.set_default_device('cuda')
        a = tud.DataLoader(ds, shuffle=True)
        b = Loader(ds, shuffle=True)
        c = MyLoader(ds, shuffle=True)
    """
    assert ids(code, rule="default_device_sampler_generator") == [
        "default_device_sampler_generator"] * 2


def test_utf8_columns_are_characters() -> None:
    code = 'import torch\nx = "张量"; s = torch.load(p, weights_only=True)  # 中文\n'
    (f,) = lint_text(code, [get_rule("gpu_checkpoint_on_cpu")]).findings
    assert f.col == code.splitlines()[1].index("torch.load") + 1


def test_noqa_with_ids_bare_and_other_ids() -> None:
    code = textwrap.dedent("""
        import torch
        a = torch.load(p, weights_only=True)  # noqa: gpu_checkpoint_on_cpu
        b = torch.load(p, weights_only=True)  # noqa
        c = torch.load(p, weights_only=True)  # noqa: E501, gpu_checkpoint_on_cpu
        d = torch.load(p, weights_only=True)  # noqa: hidden_host_sync
        e = torch.load(
            p, weights_only=True)  # noqa: gpu_checkpoint_on_cpu
        f = torch.load(p, weights_only=True)  # devcheck: ignore[gpu_checkpoint_on_cpu]
        g = torch.load(p, weights_only=True)  # devcheck: ignore[hidden_host_sync, x]
    """)
    lines = [f.line for f in lint_text(code, RULES).findings]
    assert lines == [6, 10]


def test_rule_for_pitfall_names_the_rule_or_the_rules_that_find_a_cause() -> None:
    from devcheck.pitfalls import REGISTRY

    assert "lint --select hidden_host_sync" in (rule_for_pitfall("hidden_host_sync") or "")
    assert all(len(rule_for_pitfall(r.id) or "") <= 100 for r in RULES)
    line = rule_for_pitfall("mixed_devices") or ""
    assert "tensor_to_not_inplace" in line and "default_device_not_applied" in line
    assert rule_for_pitfall("no_driver") is None  # a machine problem: nothing in the code
    for rule in RULES:
        assert set(rule.covers) <= set(REGISTRY), rule.id


def test_ddp_file_points_to_the_ddp_pitfall() -> None:
    code = ("import torch\nfrom torch.nn.parallel import DistributedDataParallel\n"
            "state = torch.load('ckpt.pt', weights_only=True)\n")
    (f,) = lint_text(code, [get_rule("gpu_checkpoint_on_cpu")]).findings
    assert "ddp_load_without_map_location" in f.message


def test_step_counters_and_in_place_containers_are_not_flagged() -> None:
    code = """
        for step, (X, y) in enumerate(loader):
            loss = criterion(model(X), y)
            loss.backward()
            optimizer.step()
            writer.add_scalar("step", int(step))
        inputs = tokenizer(text, return_tensors="pt")
        inputs.to(device)  # BatchEncoding.to moves in place and returns self
        for batch in pyg_loader:
            batch.to(device)
    """
    assert ids(code) == []


NOTEBOOK_CASES = [c for c in CASES
                  if c[0] not in ("spawn_needs_importable_main", "notebook_plot_in_script")]


@pytest.mark.parametrize(("rule", "bad", "good"), NOTEBOOK_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(NOTEBOOK_CASES)])
def test_same_rules_in_a_notebook_split_into_cells(rule: str, bad: str, good: str) -> None:
    """The snippets again, as notebooks with one statement group per cell."""
    def cells(code: str) -> str:
        lines = textwrap.dedent(code).strip("\n").splitlines()
        out, block = [], []
        for line in lines:  # a new cell at each top-level statement
            if block and not line.startswith((" ", "\t", ")")):
                out.append("\n".join(block))
                block = []
            block.append(line)
        out.append("\n".join(block))
        return "\n# %%\n".join(out)

    assert rule in ids(cells(bad), notebook=True, rule=rule)
    assert ids(cells(good), notebook=True, rule=rule) == []


def test_explain_names_the_lint_rule_that_would_have_caught_it() -> None:
    from devcheck.pitfalls.explain import explain_text, render

    text = "RuntimeError: Expected a 'cuda' device type for generator but found 'cpu'"
    out = render(explain_text(text), len(text))
    assert "Catch it before it runs: devcheck lint --select default_device_sampler_generator" \
        in out
    nothing = "RuntimeError: Found no NVIDIA driver on your system."
    assert "devcheck lint" not in render(explain_text(nothing), len(nothing))
