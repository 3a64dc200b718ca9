"""se_multi on JAX: the example backend of se_multi's "Writing a backend" page."""

from se_multi_jax.backend import JaxBackend

__all__ = ["JaxBackend"]
