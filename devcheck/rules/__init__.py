"""Pure rules: facts in, findings out. No I/O, no hardware, no printing."""
