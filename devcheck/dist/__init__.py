"""``devcheck dist``: torch.distributed past one process and one machine.

preflight facts (devcheck.probe.topology) -> a launch through torch's own launcher
(``launch``, running ``worker`` in each rank) -> findings (``rules``, ``hang``) -> text or
JSON (``render``). ``spawn`` runs a few gloo ranks in-process for the distributed pitfalls.
Importing this package never imports torch: only the ranks (and ``spawn``'s children) do.
"""
