"""The Python API: a trained run as one object.

    import privreid_jax
    model = privreid_jax.load("/tmp/privreid_synthetic")   # a workdir or its checkpoints/
    features = model.embed(["a.jpg", "b.jpg"])              # [2, D] float32

`load(path)` restores the latest checkpoint of a run of any method (its config
is the checkpoint's, so the model's image size and normalisation come with
it) and returns a `Model`:

* `embed(images, kind="raw")`: retrieval features [N, D] float32 (the post-BN
  feature of C, not L2-normalised; the evaluation normalises it). Images are
  uint8 HxWx3 arrays of any size, a uint8 [N, H, W, 3] array, or image file
  paths; each is resized (PIL bilinear) and normalised exactly as the
  evaluation transform of training (`data/transforms.py: eval_transform`).
  `kind` is an image kind of the method: "raw" always, for method A also
  "anon" (features of G(O)) and "recovered" (of G_R(G(O))).
* method A only: `anonymize(images)` (G, or the handcrafted desensitization in
  Base mode) and `recover(images)` (G_R, learned mode): uint8 images out. With
  `size="input"` (default, as `python -m privreid_jax.anonymize`) a list of
  images, each resized back to its input's size; with `size="model"` one
  uint8 [N, h, w, 3] array at the model's size. `recover` of `anonymize`'s
  output goes through uint8 (and a resize with size="input"), so it differs
  from the "recovered" kind, which stays in float: slightly at the model's
  size, by 2-4 dB of PSNR(O, R) after the resize (more after JPEG; keep
  images to be recovered at size="model", saved as PNG; docs/method_a.md).
* `evaluate(config_or_data_root)`: the Re-ID rows {setting: {rank1, rank5,
  rank10, mAP, mINP}} of every setting of the method ("O->O"; method A's
  "O->P", "P->O", ...) on a dataset's query/gallery, computed as training
  computes them. The argument is a config (`ConfigDict` with `data` and
  `eval`, as `configs/*.py` return, or a bare `data` section), or the folder
  of a dataset (`dataset=` names it; default the run's own dataset). The
  dataset comes from it, the model's image size and normalisation from the
  checkpoint; `rerank=True` switches on k-reciprocal re-ranking.
* `config` (the run's ConfigDict), `step` (of the checkpoint), `epoch`,
  `kinds`, `settings`, `height`, `width`.

Errors a user can make (a folder with no checkpoint, an unreadable image, a
method without an anonymizer) raise FileNotFoundError or ValueError with a
one-line message. The command-line tools (extract, evaluate, visrank, export)
share the small helpers at the end of this module.
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Any, Iterable, Sequence

import numpy as np

DEFAULT_BATCH = 32


# ------------------------------------------------------------------ images


def _as_list(images) -> list:
  """The images of any accepted input as a list of single images (path or array)."""
  if isinstance(images, (str, os.PathLike, bytes)):
    return [images]
  if isinstance(images, np.ndarray):
    if images.ndim == 4:
      return list(images)
    return [images]
  return list(images)


def _name(image, i: int) -> str:
  return os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"images[{i}]"


def read_image(image, name: str = "image") -> np.ndarray:
  """A path, encoded bytes or a uint8 HxW(x3|4) array -> uint8 HxWx3 RGB.

  Raises DatasetError (a ValueError) naming `name` if it cannot be read.
  """
  from privreid_jax.data import transforms
  if isinstance(image, os.PathLike):
    image = os.fspath(image)
  return transforms.decode_image(image, name=name)


def _pow2_at_least(n: int) -> int:
  return 1 << max(0, int(n) - 1).bit_length()


# ------------------------------------------------------------------ the model


class Model:
  """A restored run (see the module docstring). Build it with `load(path)`."""

  def __init__(self, path: str, *, where: str | None = None):
    import jax
    from privreid_jax import checkpoint, errors, train_state
    from privreid_jax.data import transforms
    from privreid_jax.methods import base as methods_base

    path = os.fspath(path)
    where = where or f"privreid_jax.load({path!r})"
    try:
      state, config, step = checkpoint.restore_run(path, where)
    except (FileNotFoundError, errors.CheckpointError):
      raise
    except (ValueError, KeyError, OSError) as e:
      raise ValueError(f"{where}: not a readable privreid_jax checkpoint "
                       f"({' '.join(str(e).split())[:200]})") from None
    self.path = os.path.abspath(path)
    self.config = config
    self.step = int(step)
    self.epoch = _epoch_of(checkpoint, path, self.step, config)
    reid = state["params"].get("reid", {})
    classifier = reid.get("classifier", {}).get("kernel")
    num_classes = 0 if classifier is None else int(classifier.shape[-1])
    self.method = methods_base.load(config.method)(config, num_classes=num_classes,
                                                   steps_per_epoch=1)
    self.state = train_state.TrainState(
        step=state["step"], params=state["params"], batch_stats=state["batch_stats"],
        opt_state={}, rng=state["rng"])
    self.transform = transforms.TransformConfig.from_config(config.data)
    self.height, self.width = self.transform.height, self.transform.width
    self.mean = np.asarray(self.transform.mean, np.float32)
    self.std = np.asarray(self.transform.std, np.float32)
    self.settings = dict(self.method.eval_settings)
    self.kinds = tuple(dict.fromkeys(k for q_g in self.settings.values() for k in q_g))
    self._embed = jax.jit(self.method.embed, static_argnums=2)
    self._images: dict[str, Any] = {}

  def __repr__(self) -> str:
    return (f"Model({self.path!r}, method={self.config.method!r}, step={self.step}, "
            f"image {self.height}x{self.width}, kinds={self.kinds})")

  @property
  def is_anonymizer(self) -> bool:
    """Method A (config.method='anonymization'): anonymize() works."""
    return hasattr(self.method, "anonymize")

  # --- preprocessing ------------------------------------------------------------

  def preprocess(self, images) -> np.ndarray:
    """Images (see `embed`) -> float32 [N, h, w, 3], as training's evaluation transform."""
    from privreid_jax.data import transforms
    items = _as_list(images)
    out = np.zeros((len(items), self.height, self.width, 3), np.float32)
    for i, image in enumerate(items):
      out[i] = transforms.eval_transform(read_image(image, _name(image, i)),
                                         self.transform)
    return out

  def _run(self, fn, images, batch_size: int, fixed_batch: bool):
    """fn(normalised [B, h, w, 3]) per batch of B rows (zero-padded) -> numpy rows.

    B is `batch_size`, or for fewer images the next power of two, so a caller
    with varying counts compiles at most log2(batch_size) + 1 shapes.
    """
    items = _as_list(images)
    if int(batch_size) < 1:
      raise ValueError(f"batch_size={batch_size}: must be >= 1")
    rows = int(batch_size)
    if not fixed_batch and len(items) < rows:
      rows = min(rows, _pow2_at_least(len(items)))
    outs = []
    for i in range(0, len(items), rows):
      chunk = self.preprocess(items[i:i + rows])
      n = len(chunk)
      if n < rows:
        chunk = np.concatenate([chunk, np.zeros((rows - n,) + chunk.shape[1:],
                                                np.float32)])
      outs.append(np.asarray(fn(chunk))[:n])
    return outs

  # --- features -----------------------------------------------------------------

  def embed(self, images, kind: str = "raw", *, batch_size: int = DEFAULT_BATCH,
            fixed_batch: bool = False) -> np.ndarray:
    """Retrieval features [N, D] float32 of `images` seen as `kind` (module doc).

    `fixed_batch=True` pads every batch to `batch_size` (one compiled shape
    for callers that pass varying numbers of images).
    """
    if kind not in self.kinds:
      raise ValueError(f"kind={kind!r}: a {self.config.method!r} run embeds "
                       f"{' | '.join(self.kinds)}")
    outs = self._run(lambda x: self._embed(self.state, x, kind), images, batch_size,
                     fixed_batch)
    if not outs:
      return np.zeros((0, self.feature_dim), np.float32)
    return np.concatenate(outs).astype(np.float32)

  @property
  def feature_dim(self) -> int:
    import jax
    out = jax.eval_shape(lambda x: self.method.embed(self.state, x, "raw"),
                         jax.ShapeDtypeStruct((1, self.height, self.width, 3), np.float32))
    return int(out.shape[-1])

  # --- method A -----------------------------------------------------------------

  def _image_fn(self, net: str):
    """Jitted normalised -> [0, 1] images of method A's `anonymize` / `recover`."""
    if not self.is_anonymizer:
      raise ValueError(f"{net}: a {self.config.method!r} run has no anonymizer "
                       "(method A, config.method='anonymization', only)")
    if net == "recover" and getattr(self.method, "mode", "learned") != "learned":
      raise ValueError("recover: config.anon.mode='base' has no recovery network")
    if net not in self._images:
      import jax
      from privreid_jax.ops import normalize
      fn = getattr(self.method, net)
      mean, std = tuple(self.mean.tolist()), tuple(self.std.tolist())
      self._images[net] = jax.jit(lambda s, x: normalize.to_unit(fn(s, x), mean, std))
    return self._images[net]

  def _images_out(self, net: str, images, size: str, batch_size: int,
                  fixed_batch: bool = False):
    if size not in ("input", "model"):
      raise ValueError(f"size={size!r}: expected 'input' (each image at its own size) "
                       "or 'model' (the model's size)")
    fn = self._image_fn(net)
    items = _as_list(images)
    outs = self._run(lambda x: fn(self.state, x), items, batch_size, fixed_batch)
    out = (np.round(np.concatenate(outs) * 255.0).astype(np.uint8) if outs else
           np.zeros((0, self.height, self.width, 3), np.uint8))
    if size == "model":
      return out
    from PIL import Image
    result = []
    for i, (image, y) in enumerate(zip(items, out)):
      h, w = read_image(image, _name(image, i)).shape[:2] if not (
          isinstance(image, np.ndarray) and image.ndim == 3) else image.shape[:2]
      result.append(np.asarray(Image.fromarray(y).resize((w, h), Image.BILINEAR)))
    return result

  def anonymize(self, images, *, size: str = "input", batch_size: int = DEFAULT_BATCH,
                fixed_batch: bool = False):
    """Method A's anonymized images (module doc): G(O), or M in Base mode."""
    return self._images_out("anonymize", images, size, batch_size, fixed_batch)

  def recover(self, images, *, size: str = "input", batch_size: int = DEFAULT_BATCH,
              fixed_batch: bool = False):
    """Method A's recovered images G_R(P) of anonymized images P (module doc)."""
    return self._images_out("recover", images, size, batch_size, fixed_batch)

  # --- evaluation -----------------------------------------------------------------

  def eval_config(self, config_or_data_root, *, dataset: str | None = None,
                  rerank: bool | None = None):
    """(data config, eval config) of an evaluation on another config or data root.

    The dataset fields come from the argument, the image size and
    normalisation from the checkpoint's config (module doc).
    """
    import ml_collections
    target = config_or_data_root
    ckpt = self.config
    if isinstance(target, (str, os.PathLike)):
      root = os.fspath(target)
      if not os.path.isdir(root):
        raise FileNotFoundError(f"data root {root}: no such folder")
      data = ml_collections.ConfigDict(ckpt.data.to_dict())
      data.root = root
      data.name = dataset or ckpt.data.name
      data.source = "folder"
      data.sources = ()
      data.combineall = False
      eval_cfg = ml_collections.ConfigDict(ckpt.eval.to_dict())
    elif isinstance(target, ml_collections.ConfigDict):
      has_data = "data" in target
      data = ml_collections.ConfigDict((target.data if has_data else target).to_dict())
      if dataset:
        data.name = dataset
      eval_cfg = ml_collections.ConfigDict(
          (target.eval if has_data and "eval" in target else ckpt.eval).to_dict())
    else:
      raise ValueError(f"evaluate: expected a ConfigDict or a dataset folder, got "
                       f"{type(target).__name__}")
    for key in ("height", "width", "mean", "std"):
      data[key] = copy.deepcopy(ckpt.data[key])
    if rerank is not None:
      eval_cfg.rerank = bool(rerank)
    return data, eval_cfg

  def evaluator(self, config_or_data_root, *, dataset: str | None = None,
                rerank: bool | None = None, cache: bool = True):
    """(ReidEvaluator, Splits, eval config) for `evaluate` and visrank."""
    from privreid_jax import sharding
    from privreid_jax.data import splits as data_splits
    from privreid_jax.evaluation.reid import ReidEvaluator
    data, eval_cfg = self.eval_config(config_or_data_root, dataset=dataset, rerank=rerank)
    splits = data_splits.open_eval_splits(data, data.name)
    evaluator = ReidEvaluator(self.method, splits, data, eval_cfg, sharding.make_mesh(),
                              cache=cache)
    return evaluator, splits, eval_cfg

  def evaluate(self, config_or_data_root, *, dataset: str | None = None,
               rerank: bool | None = None,
               settings: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Re-ID rows {setting: metrics} on a dataset (module doc); `settings`
    picks some of the method's (default: all)."""
    chosen = self._settings(settings)
    evaluator, _, _ = self.evaluator(config_or_data_root, dataset=dataset, rerank=rerank)
    return evaluator.run(self.state, chosen)

  def _settings(self, names: Iterable[str] | None) -> dict[str, tuple[str, str]]:
    if names is None:
      return dict(self.settings)
    names = list(names)
    unknown = [n for n in names if n not in self.settings]
    if unknown:
      raise ValueError(f"setting {unknown[0]!r}: a {self.config.method!r} run has "
                       f"{', '.join(self.settings)}")
    return {n: self.settings[n] for n in names}


def _epoch_of(checkpoint, path: str, step: int, config) -> int:
  """The epoch the trainer stored in the checkpoint's meta (step // steps_per_epoch)."""
  import orbax.checkpoint as ocp
  try:
    ckpts = checkpoint.Checkpoints(checkpoint.run_folder(path))
    try:
      meta = ckpts.manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))["meta"]
    finally:
      ckpts.close()
    return int(meta["epoch"])
  except (KeyError, TypeError, ValueError, OSError):   # a meta without the epoch
    spe = int(config.optim.get("steps_per_epoch", 0) or 0)
    return step // spe if spe else 0


def load(path: str | os.PathLike, *, where: str | None = None) -> Model:
  """The latest checkpoint of the run in `path` (a workdir or its checkpoints/)."""
  return Model(os.fspath(path), where=where)


# -------------------------------------------------- helpers of the command-line tools


def one_line(e: BaseException) -> str:
  """An exception as one line (the first line, and the last if it says more)."""
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  if not lines:
    return type(e).__name__
  if len(lines) > 1 and lines[-1] not in lines[0]:
    return f"{lines[0]} {lines[-1]}"
  return lines[0]


def fail(message: str, code: int = 1) -> None:
  """A user error: one line on stderr, exit status `code` (1; 2 for a bad command line)."""
  from privreid_jax import cli
  cli.fail(message, code)


def parse_flags(flag_values, argv: Sequence[str] | None, doc: str) -> list[str]:
  """`cli.parse_tool_flags` (kept here for the tools that call it through the API)."""
  from privreid_jax import cli
  return cli.parse_tool_flags(flag_values, argv, doc)


def warn(message: str) -> None:
  """A warning line on stderr that does not break a tqdm bar."""
  from tqdm import tqdm
  tqdm.write(f"warning: {message}", file=sys.stderr)


def load_for_cli(path: str | None, flag: str = "checkpoint") -> Model:
  """`load` for a tool's --checkpoint flag (its errors are one-line user errors)."""
  where = f"--{flag}={path}"
  try:
    return load(path, where=where)
  except (FileNotFoundError, ValueError) as e:
    fail(one_line(e))
