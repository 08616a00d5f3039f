"""Method B (dual-stage privacy-enhancing Re-ID) on real pedestrians, CPU-sized.

  python -m privreid_jax.main --config=configs/dual_real_small.py \
      --config.data.root=PARENT --workdir=/tmp/dual_real

PARENT holds any of VIPeR, GRID, PRID 2011, CUHK01 and i-LIDS in torchreid's
layouts (configs/real_small.py; missing ones are skipped with a line saying so).
Their training splits train together; CUHK01's test split (486 people) is the
run's own query/gallery and the released gallery the attacks target; every
other dataset present gets its own rows ("viper/O->O", ...). Without CUHK01 the
first dataset found takes its place.

The sizes and variants are configs/dual_synthetic.py's (64x32 images, a width-16
ResNet-18, 16 epochs; `baseline`, `clean`, `blur`, `mosaic`, `noise`, `advid`,
`onestage`, `tiny`).
"""

from privreid_jax import config_base
from privreid_jax.methods.dual_stage import config as dual_config


def get_config(arg=None):
  names = config_base.variants(arg, dual_config.VARIANTS + ("tiny",),
                               "configs/dual_real_small.py")
  return dual_config.cpu_config(names, real=True)
