"""Compiled numba kernels (underscored, unvalidated); call them through the problem and
model classes, which validate their arguments."""
