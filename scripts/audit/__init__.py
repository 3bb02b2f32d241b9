"""The hostile audit (issue 9): ~220 ways to misuse devcheck and softmax, each judged for
tracebacks, orphans, hangs, silent failures and lost or wrong output. See harness.py."""
