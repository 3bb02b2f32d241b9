"""Softmax regression on Fashion-MNIST (d2l ch. 3.6): from scratch and concise, on any device.

Import the parts you need (``softmax.model``, ``softmax.train``...); this package imports
nothing heavy itself, so ``softmax --help`` stays fast.
"""
