"""BoT baseline on DukeMTMC-reID at paper scale (METHODS.md s.0, s.4).

  python -m privreid_jax.main --config=configs/duke.py \
      --config.data.root=/data/DukeMTMC-reID --workdir=/tmp/duke
"""

from privreid_jax import config_base


def get_config(arg=None):
  del arg
  c = config_base.base_config()
  c.data.name = "dukemtmcreid"
  return c
