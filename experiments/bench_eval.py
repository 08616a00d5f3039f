"""Benchmark: chunked `evaluate_features` vs a NumPy port of torchreid's loop.

Both run in this process on the same random MSMT17-sized features (11,659
queries x 82,161 gallery x 2048-d by default; ~3,060 test identities, 15
cameras). The baseline is torchreid's pipeline written out in NumPy: the full
squared-Euclidean distance matrix, `np.argsort` of all of it, then
`eval_market1501`'s per-query Python loop. At full size that baseline needs
~21 bytes per (query, gallery) pair (~20 GB), so by default it runs on the
first `--baseline_queries` queries against the whole gallery and its time and
memory are extrapolated linearly to all queries (the output says so).

With `--torchreid_rank_cy=PATH/TO/rank_cy.pyx` (torchreid's
`torchreid/metrics/rank_cylib/rank_cy.pyx` from a torchreid checkout; needs the
optional `pip install cython` and a C compiler) the bench also compiles
torchreid's Cython evaluator into a temporary directory and times its real
`evaluate_cy` with its distance matrix (float32 NumPy, as torchreid computes it)
on the first `--torchreid_queries` queries, checks that `evaluate_rank` gives
the same Rank-1 / mAP on that matrix, and times `evaluate_features` on the same
queries right after it (the in-process ratio). `evaluate_cy` holds ~21 bytes per
(query, gallery) pair as well, ~19 GB at full MSMT17 size.

Memory is the peak resident set size (RSS, from /proc/self/statm, sampled
every 5 ms by a thread) above the RSS when the call started; it counts NumPy
arrays and XLA buffers alike, and excludes the input features.

  python experiments/bench_eval.py                 # MSMT17 size, several minutes
  python experiments/bench_eval.py --scale=0.05    # quick run
  python experiments/bench_eval.py --torchreid_rank_cy=/path/to/rank_cy.pyx
"""

from __future__ import annotations

import atexit
import importlib
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

from absl import app, flags
import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# `python experiments/bench_eval.py` from anywhere: the repository on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from privreid_jax.evaluation import ranking as evaluation  # noqa: E402  (after JAX_PLATFORMS)

_NUM_QUERY = flags.DEFINE_integer("num_query", 11659, "Queries (MSMT17: 11,659).")
_NUM_GALLERY = flags.DEFINE_integer("num_gallery", 82161, "Gallery images (MSMT17: 82,161).")
_DIM = flags.DEFINE_integer("dim", 2048, "Feature dimension.")
_NUM_IDS = flags.DEFINE_integer("num_ids", 3060, "Test identities (MSMT17: 3,060).")
_NUM_CAMS = flags.DEFINE_integer("num_cams", 15, "Cameras.")
_SCALE = flags.DEFINE_float("scale", 1.0, "Multiplies #queries, #gallery and #ids.")
_CHUNK = flags.DEFINE_integer("chunk_size", 256, "evaluate_features query chunk.")
_BASE_Q = flags.DEFINE_integer("baseline_queries", 1000,
                               "Queries for the torchreid loop (0 = all); the full "
                               "time is extrapolated when fewer than all.")
_RANK_CY = flags.DEFINE_string(
    "torchreid_rank_cy", None, "Path to torchreid's rank_cy.pyx: also time torchreid's "
    "Cython evaluate_cy (needs Cython and a C compiler).")
_CY_Q = flags.DEFINE_integer("torchreid_queries", 2000,
                             "Queries for evaluate_cy (0 = all, ~21 B per pair); the full "
                             "time is extrapolated when fewer than all.")
_CY_REPEATS = flags.DEFINE_integer(
    "torchreid_repeats", 1, "Alternating evaluate_cy / evaluate_features runs on those "
    "queries; the fastest of each counts.")
_SIGNAL = flags.DEFINE_float("signal", 0.3, "Identity-centre weight in the features.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")

_MAX_RANK = 50


# ----------------------------------------------------------------------------
# Baseline: torchreid's distance + eval_market1501, ported to NumPy.
# ----------------------------------------------------------------------------
def torchreid_distance(qf: np.ndarray, gf: np.ndarray) -> np.ndarray:
  """F.normalize then `euclidean_squared_distance` over the full matrix."""
  qf = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
  gf = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
  d = (qf ** 2).sum(1, keepdims=True) + (gf ** 2).sum(1)[None, :]
  d -= 2.0 * (qf @ gf.T)
  return d


def torchreid_eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """The per-query loop of torchreid 0.2.5's `eval_market1501` (Python version)."""
  num_q, num_g = distmat.shape
  max_rank = min(max_rank, num_g)
  indices = np.argsort(distmat, axis=1)
  matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
  all_cmc, all_ap = [], []
  num_valid_q = 0.0
  for q_idx in range(num_q):
    order = indices[q_idx]
    remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
    raw_cmc = matches[q_idx][np.invert(remove)]
    if not np.any(raw_cmc):
      continue
    cmc = raw_cmc.cumsum()
    cmc[cmc > 1] = 1
    all_cmc.append(cmc[:max_rank])
    num_valid_q += 1.0
    num_rel = raw_cmc.sum()
    tmp_cmc = raw_cmc.cumsum()
    tmp_cmc = [x / (i + 1.0) for i, x in enumerate(tmp_cmc)]
    tmp_cmc = np.asarray(tmp_cmc) * raw_cmc
    all_ap.append(tmp_cmc.sum() / num_rel)
  assert num_valid_q > 0, "all query identities do not appear in gallery"
  all_cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q
  return all_cmc, float(np.mean(all_ap))


def load_rank_cy(path: str):
  """torchreid's rank_cy.pyx compiled with pyximport in a temporary directory.

  Returns the module, or None (with a one-line message) when Cython is absent.
  """
  try:
    import pyximport  # noqa: PLC0415  (optional: Cython is not a dependency)
  except ImportError:
    print("--torchreid_rank_cy needs Cython, which is not installed: pip install cython")
    return None
  if not os.path.isfile(path):
    raise app.UsageError(f"--torchreid_rank_cy: no file {path}")
  tmp = tempfile.mkdtemp(prefix="bench_eval_rank_cy_")
  atexit.register(shutil.rmtree, tmp, ignore_errors=True)
  shutil.copy(path, os.path.join(tmp, "torchreid_rank_cy.pyx"))
  sys.path.insert(0, tmp)
  importers = pyximport.install(build_dir=os.path.join(tmp, "build"), language_level=3,
                                setup_args={"include_dirs": np.get_include()})
  try:
    t = time.perf_counter()
    module = importlib.import_module("torchreid_rank_cy")
    print(f"compiled torchreid's {path} ({time.perf_counter() - t:.1f} s)")
  finally:
    pyximport.uninstall(*importers)
    sys.path.remove(tmp)
  return module


# ----------------------------------------------------------------------------
# Measurement.
# ----------------------------------------------------------------------------
def _rss() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
  """Context manager: peak RSS above the entry RSS, sampled by a thread."""

  def __init__(self, interval: float = 0.005):
    self.interval = interval
    self.peak = 0

  def _poll(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, _rss() - self.start)
      time.sleep(self.interval)

  def __enter__(self):
    self.start = _rss()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._poll, daemon=True)
    self._thread.start()
    self.t0 = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.t0
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _rss() - self.start)


def make_data(rng, n_q, n_g, dim, n_ids, n_cams, signal):
  """Features = signal * identity centre + unit noise, float32, built in place."""
  g_pids = rng.integers(1, n_ids + 1, n_g)
  q_pids = rng.choice(np.unique(g_pids), n_q)
  centers = rng.standard_normal((n_ids + 1, dim), dtype=np.float32) * np.float32(signal)

  def feats(pids):
    out = rng.standard_normal((pids.size, dim), dtype=np.float32)
    for s in range(0, pids.size, 8192):
      out[s:s + 8192] += centers[pids[s:s + 8192]]
    return out

  return (feats(q_pids), feats(g_pids), q_pids, g_pids,
          rng.integers(0, n_cams, n_q), rng.integers(0, n_cams, n_g))


def _gb(n_bytes: float) -> str:
  return f"{n_bytes / 2**30:.2f} GiB"


def main(argv):
  del argv
  scale = _SCALE.value
  n_q = max(2, round(_NUM_QUERY.value * scale))
  n_g = max(2, round(_NUM_GALLERY.value * scale))
  n_ids = max(2, round(_NUM_IDS.value * scale))
  dim = _DIM.value
  rng = np.random.default_rng(_SEED.value)
  t = time.perf_counter()
  qf, gf, q_pids, g_pids, q_cams, g_cams = make_data(rng, n_q, n_g, dim, n_ids,
                                                     _NUM_CAMS.value, _SIGNAL.value)
  print(f"data: {n_q} queries x {n_g} gallery x {dim}-d, {n_ids} ids, "
        f"{_NUM_CAMS.value} cameras ({time.perf_counter() - t:.1f} s to generate); "
        f"full distance matrix would be {_gb(4.0 * n_q * n_g)} in float32")

  # Ours: the whole query set, chunked.
  with PeakRSS() as ours:
    res = evaluation.evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams,
                                       chunk_size=_CHUNK.value, max_rank=_MAX_RANK)
  print(f"evaluate_features (all {n_q} queries, chunk {_CHUNK.value}, incl. jit "
        f"compile): {ours.seconds:.1f} s, peak RSS +{_gb(ours.peak)}; "
        f"Rank-1 {res['cmc'][0]:.4f} mAP {res['mAP']:.4f} mINP {res['mINP']:.4f} "
        f"({res['num_valid_queries']} valid queries)")

  # Baseline: torchreid's loop on a query subset (or all queries).
  n_base = n_q if _BASE_Q.value <= 0 else min(_BASE_Q.value, n_q)
  with PeakRSS() as base:
    distmat = torchreid_distance(qf[:n_base], gf)
    b_cmc, b_map = torchreid_eval_market1501(distmat, q_pids[:n_base], g_pids,
                                             q_cams[:n_base], g_cams, _MAX_RANK)
  factor = n_q / n_base
  note = "" if n_base == n_q else (
      f" on the first {n_base} queries; x{factor:.2f} extrapolated to all {n_q}")
  print(f"torchreid loop{note}: {base.seconds:.1f} s, peak RSS +{_gb(base.peak)}")

  # Same matrix through evaluate_rank: the vectorised ranking must agree.
  with PeakRSS() as same:
    check = evaluation.evaluate_rank(distmat, q_pids[:n_base], g_pids, q_cams[:n_base],
                                     g_cams, max_rank=_MAX_RANK)
  print(f"evaluate_rank on the baseline's {n_base}-query matrix: {same.seconds:.2f} s; "
        f"max |dCMC| {np.abs(check['cmc'] - b_cmc).max():.2e}, "
        f"|dmAP| {abs(check['mAP'] - b_map):.2e}")
  del distmat

  cy = None
  if _RANK_CY.value:
    rank_cy = load_rank_cy(_RANK_CY.value)
    if rank_cy is not None:
      cy = compare_rank_cy(rank_cy, qf, gf, q_pids, g_pids, q_cams, g_cams)

  base_full = base.seconds * factor
  base_mem = base.peak * factor
  print("\nsummary")
  print(f"  ours            {ours.seconds:9.1f} s   peak RSS +{_gb(ours.peak)}")
  print(f"  torchreid loop  {base_full:9.1f} s   peak RSS +{_gb(base_mem)}"
        + ("" if n_base == n_q else
           f"   (extrapolated from {n_base} queries: {base.seconds:.1f} s, "
           f"+{_gb(base.peak)}; analytic full-size peak ~21 B/pair = "
           f"{_gb(21.0 * n_q * n_g)})"))
  print(f"  speed-up        {base_full / ours.seconds:9.1f} x")
  if cy is not None:
    print(f"  torchreid evaluate_cy {cy['full']:9.1f} s"
          + ("" if cy["n"] == n_q else f"   (extrapolated from {cy['n']} queries: "
             f"{cy['seconds']:.1f} s incl. its distance matrix)"))
    print(f"  ours / evaluate_cy    {ours.seconds / cy['full']:9.3f}   (full run vs "
          f"extrapolated), {cy['ratio']:.3f} on the same {cy['n']} queries in turn")
  print(f"  process max RSS {_gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}"
        " (includes the input features)")


def compare_rank_cy(rank_cy, qf, gf, q_pids, g_pids, q_cams, g_cams):
  """Times torchreid's distance + evaluate_cy and ours on the first queries.

  With --torchreid_repeats > 1 the two alternate and the fastest run of each
  counts (the ratio of those, and each round's ratio, are printed).
  """
  n_q = qf.shape[0]
  n = n_q if _CY_Q.value <= 0 else min(_CY_Q.value, n_q)
  sub = (q_pids[:n], g_pids, q_cams[:n], g_cams)
  cy_s, ours_s = [], []
  for r in range(max(1, _CY_REPEATS.value)):
    with PeakRSS() as cy:
      distmat = torchreid_distance(qf[:n], gf)
      cy_cmc, cy_map = rank_cy.evaluate_cy(distmat, *sub, _MAX_RANK)
    cy_s.append(cy.seconds)
    print(f"torchreid evaluate_cy (its float32 distance matrix + Cython) on {n} queries: "
          f"{cy.seconds:.1f} s, peak RSS +{_gb(cy.peak)}; Rank-1 {float(cy_cmc[0]):.4f} "
          f"mAP {float(cy_map):.4f}")
    if r == 0:
      with PeakRSS() as same:
        check = evaluation.evaluate_rank(distmat, *sub, max_rank=_MAX_RANK)
      d_r1 = abs(float(check["cmc"][0]) - float(cy_cmc[0]))
      d_map = abs(check["mAP"] - float(cy_map))
      print(f"evaluate_rank on the same matrix: {same.seconds:.2f} s; |dRank-1| {d_r1:.1e}, "
            f"|dmAP| {d_map:.1e} (evaluate_cy sums in float32 and sorts ties unstably)")
      assert d_r1 < 1e-4 and d_map < 1e-4, ("evaluate_rank and torchreid's evaluate_cy "
                                           f"disagree: dRank-1 {d_r1}, dmAP {d_map}")
    del distmat
    with PeakRSS() as ours:
      evaluation.evaluate_features(qf[:n], gf, *sub, chunk_size=_CHUNK.value,
                                   max_rank=_MAX_RANK)
    ours_s.append(ours.seconds)
    print(f"evaluate_features on the same {n} queries: {ours.seconds:.1f} s, peak RSS "
          f"+{_gb(ours.peak)}: {ours.seconds / cy.seconds:.3f} x evaluate_cy's time")
  if len(cy_s) > 1:
    print(f"fastest of {len(cy_s)}: evaluate_features {min(ours_s):.1f} s, evaluate_cy "
          f"{min(cy_s):.1f} s: {min(ours_s) / min(cy_s):.3f}; per round "
          + ", ".join(f"{a / b:.3f}" for a, b in zip(ours_s, cy_s)))
  return {"n": n, "seconds": min(cy_s), "full": min(cy_s) * n_q / n,
          "ratio": min(ours_s) / min(cy_s)}


if __name__ == "__main__":
  app.run(main)
