"""Training and evaluation compile their jitted functions once per input shape.

Compilations are counted with a public `jax.monitoring` listener on the
backend-compile event, which fires once per XLA compilation (including a
persistent-cache lookup) and names the compiled function. `trainer.run` on the
tiny synthetic config must compile its train step and the evaluator's embed
function once each. The negative controls, on a cheap stand-in step using the
same TrainState machinery, show the counter catches the usual causes of
per-step recompiles: a Python scalar passed as a static argument, and a state
leaf whose type changes between steps (a Python-int step is weakly typed,
unlike the int32 the step returns).
"""

from __future__ import annotations

import collections
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from privreid_jax import metric_writers, sharding, train_state, trainer
from privreid_jax.data import splits as data_splits
from privreid_jax.evaluation.reid import ReidEvaluator
from privreid_jax.methods import baseline

from configs import synthetic as synthetic_config

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
  """Yields a Counter {function name: XLA compilations} filled while active."""
  counts: collections.Counter = collections.Counter()

  def listener(event: str, duration_secs: float, **kwargs) -> None:
    del duration_secs
    if event == COMPILE_EVENT:   # fun_name is e.g. "jit(train_step)"
      name = str(kwargs.get("fun_name", "?"))
      if name.startswith("jit(") and name.endswith(")"):
        name = name[4:-1]
      counts[name] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("synth") / "data")


def tiny_config(data_root):
  c = synthetic_config.get_config("tiny")
  c.data.root = data_root
  return c


def tiny_method_and_state(config, num_classes=8):
  """The baseline and its state, initialised as trainer.run does (replicated)."""
  method = baseline.Method(config, num_classes=num_classes, steps_per_epoch=2)
  init = jax.jit(method.init, out_shardings=sharding.replicated(sharding.make_mesh()))
  return method, init(jax.random.PRNGKey(0), trainer.example_batch(config.data, False))


def test_counter_counts_one_compile_per_new_shape():
  f = jax.jit(lambda x: jnp.sin(x) * 3.0)
  with count_compiles() as counts:
    for n in (3, 3, 4, 3, 4):
      f(jnp.ones((n,))).block_until_ready()
  assert counts["<lambda>"] == 2


def test_trainer_run_compiles_train_step_and_embed_once(tmp_path, data_root):
  config = tiny_config(data_root)     # 2 epochs x 2 steps, evaluation every epoch
  with count_compiles() as counts:
    trainer.run(config, str(tmp_path))
  rows = metric_writers.read_eval_rows(str(tmp_path))
  assert len(rows) == 2               # embed ran over query + gallery twice
  assert counts["train_step"] == 1, dict(counts)
  assert counts["embed"] == 1, dict(counts)


def test_evaluator_embed_compiles_once_per_batch_shape(data_root):
  config = tiny_config(data_root)
  splits = data_splits.open_splits(config.data)
  method, state = tiny_method_and_state(config, splits.num_train_pids)
  evaluator = ReidEvaluator(method, splits, config.data, config.eval,
                            sharding.make_mesh())
  with count_compiles() as counts:
    # Query and gallery differ in size; the padded last batches keep one shape.
    q = evaluator.features(state, "query", "raw")
    g = evaluator.features(state, "gallery", "raw")
    assert counts["embed"] == 1
    assert len(q) != len(g)
    config.data.eval_batch_size //= 2    # a second batch shape: one more compile
    q2 = evaluator.features(state, "query", "raw")
    evaluator.features(state, "gallery", "raw")
  assert counts["embed"] == 2
  # Eval-mode features do not depend on the batch they are computed in.
  np.testing.assert_allclose(q2, q, rtol=1e-4, atol=1e-5)


def linear_problem():
  """A stand-in method on the same TrainState machinery, cheap to compile."""
  txs = {"net": optax.sgd(0.1)}
  params = {"net": {"w": jnp.zeros((4, 1))}}
  state = train_state.create(params, {}, txs, jax.random.PRNGKey(0))

  def train_step(state, batch, lr_scale=1.0):
    def loss_fn(params):
      return jnp.mean((batch["x"] @ params["net"]["w"] - batch["y"]) ** 2) * lr_scale
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = train_state.apply_updates(state, txs, grads)
    return state.replace(step=state.step + 1), {"loss": loss}

  batch = {"x": jnp.ones((8, 4)), "y": jnp.ones((8, 1))}
  return train_step, state, batch


def test_counter_catches_a_static_python_scalar_changing_every_step():
  train_step, state, batch = linear_problem()
  static = jax.jit(train_step, static_argnums=2)   # e.g. a host-computed lr factor
  traced = jax.jit(train_step)
  with count_compiles() as counts:
    for lr_scale in (1.0, 0.5, 0.25):
      static(state, batch, lr_scale)
  assert counts["train_step"] == 3
  with count_compiles() as counts:
    for lr_scale in (1.0, 0.5, 0.25):
      traced(state, batch, lr_scale)              # traced: one compile
  assert counts["train_step"] == 1


def test_counter_catches_a_state_leaf_changing_type():
  """The host resets `step` to a Python int: weakly typed, unlike the int32."""
  train_step, state, batch = linear_problem()
  step_fn = jax.jit(train_step, donate_argnums=0)
  with count_compiles() as counts:
    for _ in range(3):
      state, _ = step_fn(state, batch)
    assert counts["train_step"] == 1
    state, _ = step_fn(state.replace(step=int(state.step)), batch)
  assert counts["train_step"] == 2
