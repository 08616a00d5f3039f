"""Method A's image networks from config.anon: the U-Net G / G_R and the PatchGAN D1 / D2."""

from __future__ import annotations

from privreid_jax import errors
from privreid_jax.models import patchgan, reid, unet


def generator(config) -> unet.UNetGenerator:
  """The U-Net shared by the anonymizer G and the recovery network G_R."""
  a = config.anon
  h, w = int(config.data.height), int(config.data.width)
  return unet.UNetGenerator(num_downs=unet.num_downs_for(h, w, int(a.num_downs)),
                            ngf=int(a.ngf), use_dropout=bool(a.dropout),
                            dtype=reid.parse_dtype(config.model.dtype),
                            conv_impl=config.model.conv_impl)


def discriminator(config) -> patchgan.PatchDiscriminator:
  """The PatchGAN of D1 and D2 (one-line error when the image is too small for it)."""
  a = config.anon
  h, w = int(config.data.height), int(config.data.width)
  out_h, out_w = patchgan.patchgan_output_shape(h, w, int(a.d_layers))
  if out_h < 1 or out_w < 1:
    raise errors.ConfigError(f"config.anon.d_layers={a.d_layers}: images of {h}x{w} "
                             f"leave a {out_h}x{out_w} PatchGAN logit map; use fewer "
                             "layers")
  return patchgan.PatchDiscriminator(ndf=int(a.ndf), n_layers=int(a.d_layers),
                                     dtype=reid.parse_dtype(config.model.dtype),
                                     conv_impl=config.model.conv_impl)
