"""BoT baseline on MSMT17_V1 at paper scale (METHODS.md s.0, s.4).

  python -m privreid_jax.main --config=configs/msmt17.py \
      --config.data.root=/data/MSMT17_V1 --workdir=/tmp/msmt17
"""

from privreid_jax import config_base


def get_config(arg=None):
  del arg
  c = config_base.base_config()
  c.data.name = "msmt17"
  return c
