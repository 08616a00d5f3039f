"""Method B figures across a sweep's runs: t-SNE of features, reconstruction grids.

  python -m experiments.figures_dual --root /work/runs/dual_sweep            # -> ROOT/report/
  python -m experiments.figures_dual --root DIR --runs baseline,onestage --out DIR2

`python -m experiments.report` draws them too (with its other plots).

- `tsne_features.png`: t-SNE of each chosen run's saved query features
  (`WORKDIR/features_test.npz`, written by method B at every evaluation),
  one panel per run, points coloured by identity. Each panel's title gives the
  fraction of points whose nearest neighbour (cosine, in the feature space
  itself, not the embedding) has the same identity: the number to read, the
  picture only illustrates it. Default runs: baseline and onestage (or
  twostage, the same stage-1 model, when onestage is missing).
- `recon_grids.png`: every run's `recon_grid.png` (input | de-identified target |
  decoder reconstruction) and `inversion_grid.png` (input | the inversion
  attacker's reconstruction), side by side.

The t-SNE is openTSNE's when it is installed, else scikit-learn's, else a small
exact numpy implementation (van der Maaten & Hinton 2008: perplexity-calibrated
Gaussian affinities, Student-t embedding, early exaggeration, momentum gradient
descent), fine for the few hundred points saved. Neither library is a dependency;
the figure's title names the one used.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

import numpy as np

FEATURES_FILE = "features_test.npz"   # privreid_jax.methods.dual_stage.FEATURES_FILE
GRIDS = ("recon_grid.png", "inversion_grid.png")
# t-SNE implementations in order of preference: backend name -> module to import.
TSNE_LIBRARIES = {"opentsne": "openTSNE", "sklearn": "sklearn.manifold"}


def _affinities(x: np.ndarray, perplexity: float) -> np.ndarray:
  """Symmetrised joint probabilities P with each row's entropy at log(perplexity)."""
  d = np.sum(x ** 2, 1)
  d = np.maximum(d[:, None] + d[None] - 2 * x @ x.T, 0.0)
  n, target = len(x), np.log(perplexity)
  p = np.zeros((n, n))
  for i in range(n):
    lo, hi, beta = 0.0, np.inf, 1.0
    di = np.delete(d[i], i)
    for _ in range(60):
      w = np.exp(-(di - di.min()) * beta)
      pi = w / w.sum()
      h = -np.sum(pi * np.log(np.maximum(pi, 1e-12)))
      if abs(h - target) < 1e-5:
        break
      if h > target:
        lo, beta = beta, beta * 2 if hi == np.inf else (beta + hi) / 2
      else:
        hi, beta = beta, (beta + lo) / 2
    p[i, np.arange(n) != i] = pi
  p = (p + p.T) / (2 * n)
  return np.maximum(p, 1e-12)


def tsne_backend() -> str:
  """What `tsne(backend="auto")` uses: "opentsne", else "sklearn", else "numpy"."""
  for name, module in TSNE_LIBRARIES.items():
    try:
      importlib.import_module(module)
    except ImportError:
      continue
    return name
  return "numpy"


def tsne(x: np.ndarray, *, perplexity: float = 20.0, steps: int = 1000,
         seed: int = 0, backend: str = "auto") -> np.ndarray:
  """[N, D] -> [N, 2] t-SNE embedding.

  backend: "auto" (`tsne_backend()`), "opentsne", "sklearn" or "numpy" (exact, O(N^2)
  memory: keep N in the hundreds). `steps` counts the numpy iterations (250 of them
  exaggerated); the libraries keep their own schedules.
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or len(x) < 5:
    raise ValueError(f"tsne: expected [N, D] features with N >= 5, got shape {x.shape}")
  perplexity = min(perplexity, (len(x) - 1) / 3)
  backend = tsne_backend() if backend == "auto" else backend
  if backend == "opentsne":
    import openTSNE
    return np.asarray(openTSNE.TSNE(perplexity=perplexity, random_state=seed).fit(x),
                      np.float64)
  if backend == "sklearn":
    from sklearn.manifold import TSNE
    # Exact gradients up to 1000 points: faster here than Barnes-Hut (measured on the
    # 2-core CPU, 600 x 2048 features: 17 s vs 25 s; 60 points: 0.4 s vs 3.1 s).
    method = "exact" if len(x) <= 1000 else "barnes_hut"
    return TSNE(perplexity=perplexity, init="pca", learning_rate="auto", method=method,
                random_state=seed).fit_transform(x).astype(np.float64)
  if backend != "numpy":
    raise ValueError(f"tsne: unknown backend {backend!r} (auto, "
                     f"{', '.join(TSNE_LIBRARIES)} or numpy)")
  return _numpy_tsne(x, perplexity, steps, seed)


def _numpy_tsne(x: np.ndarray, perplexity: float, steps: int, seed: int) -> np.ndarray:
  p = _affinities(x, perplexity)
  y = np.random.default_rng(seed).normal(scale=1e-4, size=(len(x), 2))
  velocity, gains = np.zeros_like(y), np.ones_like(y)
  for t in range(steps):
    exaggeration = 12.0 if t < 250 else 1.0
    momentum = 0.5 if t < 250 else 0.8
    diff = y[:, None] - y[None]
    num = 1.0 / (1.0 + np.sum(diff ** 2, -1))
    np.fill_diagonal(num, 0.0)
    q = np.maximum(num / num.sum(), 1e-12)
    grad = 4 * np.sum(((exaggeration * p - q) * num)[:, :, None] * diff, 1)
    gains = np.where(np.sign(grad) != np.sign(velocity), gains + 0.2, gains * 0.8)
    gains = np.maximum(gains, 0.01)
    velocity = momentum * velocity - 200.0 * gains * grad
    y = y + velocity
    y -= y.mean(0)
  return y


def nn_identity_agreement(features: np.ndarray, pids: np.ndarray) -> float:
  """Fraction of points whose nearest other point (cosine) has the same identity."""
  f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
  sim = f @ f.T
  np.fill_diagonal(sim, -np.inf)
  return float(np.mean(pids[np.argmax(sim, 1)] == pids))


def load_features(workdir: str) -> tuple[np.ndarray, np.ndarray]:
  path = os.path.join(workdir, FEATURES_FILE)
  if not os.path.exists(path):
    raise ValueError(f"{path}: missing (method B writes it at evaluation; "
                     f"config.dual.save_features > 0)")
  with np.load(path) as z:
    return z["features"], z["pids"]


def default_runs(root: str) -> list[str]:
  has = lambda name: os.path.exists(os.path.join(root, name, FEATURES_FILE))
  second = "onestage" if has("onestage") else "twostage"
  return [name for name in ("baseline", second) if has(name)]


def plot_tsne(root: str, runs: Sequence[str], out_dir: str) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 5), squeeze=False)
  backend = tsne_backend()
  for ax, name in zip(axes[0], runs):
    feats, pids = load_features(os.path.join(root, name))
    y = tsne(feats, backend=backend)
    ids, colour = np.unique(pids, return_inverse=True)
    # vmax past the last id: hsv wraps round, so 0 and 1 are both red.
    ax.scatter(y[:, 0], y[:, 1], c=colour, cmap="hsv", vmin=0, vmax=len(ids), s=10)
    ax.set(title=f"{name}: {len(pids)} queries, {len(set(pids.tolist()))} ids\n"
                 f"1-NN same identity {100 * nn_identity_agreement(feats, pids):.1f}%",
           xticks=[], yticks=[])
  path = os.path.join(out_dir, "tsne_features.png")
  fig.suptitle(f"t-SNE ({backend})", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_grids(root: str, runs: Sequence[str], out_dir: str) -> str | None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from PIL import Image
  panels = [(name, grid) for name in runs for grid in GRIDS
            if os.path.exists(os.path.join(root, name, grid))]
  if not panels:
    return None
  fig, axes = plt.subplots(1, len(panels), figsize=(1.6 * len(panels), 6), squeeze=False)
  for ax, (name, grid) in zip(axes[0], panels):
    ax.imshow(np.asarray(Image.open(os.path.join(root, name, grid))))
    label = "in|target|recon" if grid == GRIDS[0] else "in|inversion"
    ax.set_title(f"{name}\n{label}", fontsize=7)
    ax.axis("off")
  path = os.path.join(out_dir, "recon_grids.png")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_figures(root: str, out_dir: str, runs: Sequence[str] = ()) -> list[str]:
  """The t-SNE (of `runs`, default `default_runs`) and the grids; [] without data."""
  runs = list(runs) or default_runs(root)
  written = [plot_tsne(root, runs, out_dir)] if runs else []
  if os.path.isdir(root):
    names = sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))
    grids = plot_grids(root, names, out_dir)
    written += [grids] if grids else []
  return written


def _define(fv):
  """The tool's flags (absl, snake_case) on `fv`."""
  from absl import flags
  flags.DEFINE_string("root", None, "Sweep root (one folder per run).", flag_values=fv)
  flags.DEFINE_string("runs", "", "Comma-separated runs for the t-SNE (default: baseline "
                      "and onestage or twostage).", flag_values=fv)
  flags.DEFINE_string("out", None, "Output folder (default ROOT/report).", flag_values=fv)
  flags.mark_flag_as_required("root", flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Draws the figures; argv without the program name (default sys.argv[1:])."""
  from absl import flags
  from privreid_jax import cli
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _define(flags.FlagValues())
  cli.parse_tool_flags(args, ["python -m experiments.figures_dual", *argv], __doc__)
  root = os.path.abspath(args.root)
  out = args.out or os.path.join(root, "report")
  os.makedirs(out, exist_ok=True)
  try:
    runs = [r for r in args.runs.split(",") if r] or default_runs(root)
    if not runs:
      raise ValueError(f"{root}: no run folder holds {FEATURES_FILE}")
    for path in write_figures(root, out, runs):
      print(path)
  except ValueError as e:
    print(f"figures_dual: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
