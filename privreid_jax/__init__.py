"""privreid_jax: privacy-preserving person re-identification in JAX/Flax.

    import privreid_jax
    model = privreid_jax.load("/tmp/privreid_synthetic")   # a run's workdir
    features = model.embed(["a.jpg", "b.jpg"])              # [2, D] float32

`load` and `Model` live in `privreid_jax.api`, imported on first use so that
`import privreid_jax` stays cheap (no JAX).
"""

__version__ = "0.1.0"

__all__ = ["Model", "load"]


def load(path, **kwargs):
  """The latest checkpoint of a run (its workdir or checkpoints/ folder) as an
  `api.Model`: embed, anonymize / recover (method A), evaluate."""
  from privreid_jax import api  # pylint: disable=import-outside-toplevel
  return api.load(path, **kwargs)


def __getattr__(name):
  if name == "Model":
    from privreid_jax import api  # pylint: disable=import-outside-toplevel
    return api.Model
  raise AttributeError(f"module 'privreid_jax' has no attribute {name!r}")
