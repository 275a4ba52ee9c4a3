"""Lazy, float64-enforcing access to JAX.

JAX is an optional dependency (extra ``jax``). ``import effdyn`` never imports it; code
that needs it calls :func:`import_jax`, which enables x64 before any array is created
(JAX silently computes in float32 otherwise) and says what to install when it is missing.
"""

from __future__ import annotations


def import_jax():
    """Return ``(jax, jax.numpy)`` with x64 enabled, or raise ImportError with the fix."""
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "This feature needs JAX: install the extra with `pip install effdyn[jax]` "
            "(jax and diffrax; CPU is enough)."
        ) from exc
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    if jnp.zeros(1).dtype != jnp.float64:  # pragma: no cover - x64 refused
        raise RuntimeError("JAX refused to enable float64 (jax_enable_x64); effdyn will not run in float32.")
    return jax, jnp

