"""Method A (learnable reversible anonymization) on real pedestrians, CPU-sized.

  python -m privreid_jax.main --config=configs/anon_real_small.py:mosaic \
      --config.data.root=PARENT --workdir=/tmp/anon_real

PARENT holds any of VIPeR, GRID, PRID 2011, CUHK01 and i-LIDS in torchreid's
layouts (configs/real_small.py; missing ones are skipped with a line saying so).
Their training splits train together; CUHK01's test split (the largest: 486
people) is the run's own query/gallery, so the rows "O->O", "O->P", ..., the
outsiders and the image quality are measured on it, and every other dataset
present gets its own rows ("viper/O->O", ...). Without CUHK01 the first dataset
found takes its place.

The sizes are configs/anon_synthetic.py's (64x32 images, a width-16 ResNet-18
as C, U-Nets and PatchGANs of width 16, 32 epochs), so the paper's table fits
the 2-core CPU; the variants are the same (`mosaic`, `blur`, `noise`, `base`,
`stages`, `agw`, `tiny`).
"""

from privreid_jax import config_base
from privreid_jax.methods.anonymization import config as anon_config


def get_config(arg=None):
  names = config_base.variants(arg, anon_config.VARIANTS + ("tiny",),
                               "configs/anon_real_small.py")
  return anon_config.cpu_config(names, real=True)
