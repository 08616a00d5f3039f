"""The BoT schedule and torch-style Adam with coupled weight decay."""

import jax.numpy as jnp
import numpy as np
import pytest

from privreid_jax import optim


@pytest.mark.parametrize("epoch,expected", [
    (0, 3.5e-6),            # warmup starts at base * 0.01
    (5, 3.5e-4 * 0.505),    # halfway: 0.01 * 0.5 + 0.5
    (9, 3.5e-4 * (0.01 * 0.1 + 0.9)),
    (10, 3.5e-4), (39, 3.5e-4),
    (40, 3.5e-5), (69, 3.5e-5),
    (70, 3.5e-6), (119, 3.5e-6),
])
def test_warmup_multistep_matches_bot(epoch, expected):
  kw = dict(warmup_epochs=10, warmup_factor=0.01, milestones=(40, 70), gamma=0.1)
  sched = optim.warmup_multistep(3.5e-4, 7, **kw)
  for step in (epoch * 7, epoch * 7 + 6):   # constant within an epoch
    assert float(sched(step)) == pytest.approx(expected, rel=1e-6)
  assert optim.lr_at_epoch(3.5e-4, epoch, **kw) == pytest.approx(expected, rel=1e-12)


def test_schedule_rejects_bad_steps_per_epoch():
  with pytest.raises(ValueError, match="steps_per_epoch"):
    optim.warmup_multistep(1e-3, 0, warmup_epochs=1, warmup_factor=0.1,
                           milestones=(), gamma=0.1)


def test_adam_coupled_weight_decay_matches_torch_formula():
  """Two steps of torch.optim.Adam(weight_decay=wd), written out by hand."""
  lr, wd, b1, b2, eps = 0.1, 0.5, 0.9, 0.999, 1e-8
  tx = optim.adam(lambda _: lr, b1=b1, b2=b2, weight_decay=wd)
  p = jnp.array([1.0, -2.0])
  grads = [jnp.array([0.3, 0.1]), jnp.array([-0.2, 0.4])]
  state = tx.init(p)
  ref, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
  for t, g in enumerate(grads, start=1):
    upd, state = tx.update(g, state, p)
    p = p + upd
    gt = np.asarray(g) + wd * ref          # coupled decay: added to the gradient
    m = b1 * m + (1 - b1) * gt
    v = b2 * v + (1 - b2) * gt ** 2
    mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    ref = ref - lr * mhat / (np.sqrt(vhat) + eps)
  np.testing.assert_allclose(np.asarray(p), ref, rtol=1e-5)  # float32


@pytest.mark.parametrize("epoch,expected", [
    (0, 3.815e-5),          # BoT trains epoch 0 at w(1) = 0.01 * 0.9 + 0.1
    (1, 7.28e-5), (2, 1.0745e-4),
    (9, 3.5e-4),            # warm-up over one epoch early
    (38, 3.5e-4), (39, 3.5e-5),   # the milestone 40 decay at 0-based epoch 39
    (68, 3.5e-5), (69, 3.5e-6),
])
def test_default_schedule_is_the_one_bot_trains_with(epoch, expected):
  """BoT steps its scheduler when it is built and at every epoch start, so epoch e
  trains at the factor of e + 1 (values measured from reid-strong-baseline's
  WarmupMultiStepLR by experiments/parity.py); config_base defaults to that."""
  from privreid_jax import config_base
  o = config_base.base_config().optim
  assert o.epoch_offset == 1
  kw = dict(warmup_epochs=o.warmup_epochs, warmup_factor=o.warmup_factor,
            milestones=(40, 70), gamma=o.gamma, epoch_offset=o.epoch_offset)
  sched = optim.warmup_multistep(3.5e-4, 7, **kw)
  assert float(sched(epoch * 7 + 3)) == pytest.approx(expected, rel=1e-5)
  assert optim.lr_at_epoch(3.5e-4, epoch, **kw) == pytest.approx(expected, rel=1e-5)
