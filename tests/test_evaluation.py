"""Tests for privreid_jax.evaluation: golden torchreid cases and brute-force references."""

import itertools
from pathlib import Path

import jax
import numpy as np
import pytest

from privreid_jax.evaluation import distances
from privreid_jax.evaluation import metrics
from privreid_jax.evaluation import ranking as ev

GOLDEN = Path(__file__).parent / "testdata" / "market_eval_torchreid.npz"


# ----------------------------------------------------------------------------
# Plain per-query references written from the protocol text.
# ----------------------------------------------------------------------------
def brute_force_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  max_rank = min(max_rank, distmat.shape[1])
  cmcs, aps, inps = [], [], []
  for i in range(distmat.shape[0]):
    order = np.argsort(distmat[i], kind="stable")
    same_pid = g_pids[order] == q_pids[i]
    keep = ~(same_pid & (g_camids[order] == q_camids[i]))
    hits = same_pid[keep]
    if not hits.any():
      continue
    positions = np.flatnonzero(hits) + 1     # 1-based ranks of the matches
    cmcs.append([float(positions[0] <= k) for k in range(1, max_rank + 1)])
    aps.append(np.mean([(j + 1) / p for j, p in enumerate(positions)]))
    inps.append(len(positions) / positions[-1])
  return np.mean(cmcs, axis=0), np.mean(aps), np.mean(inps), len(aps)


def random_case(rng, n_q, n_g, n_ids=8, n_cams=3, levels=None, dtype=np.float32):
  q_pids = rng.integers(1, n_ids + 3, n_q)   # ids above n_ids: no match
  g_pids = rng.integers(0, n_ids + 1, n_g)     # 0 = distractor
  q_camids = rng.integers(0, n_cams, n_q)
  g_camids = rng.integers(0, n_cams, n_g)
  dist = rng.random((n_q, n_g))
  if levels:                                   # quantised: many exact ties
    dist = np.floor(dist * levels) / levels
  return dist.astype(dtype), q_pids, g_pids, q_camids, g_camids


def clustered_features(rng, n_ids, per_id_q, per_id_g, dim, noise):
  centers = rng.standard_normal((n_ids, dim))
  q_pids = np.repeat(np.arange(1, n_ids + 1), per_id_q)
  g_pids = np.repeat(np.arange(1, n_ids + 1), per_id_g)
  qf = centers[q_pids - 1] + noise * rng.standard_normal((q_pids.size, dim))
  gf = centers[g_pids - 1] + noise * rng.standard_normal((g_pids.size, dim))
  q_camids = np.zeros(q_pids.size, int)
  g_camids = rng.integers(1, 4, g_pids.size)
  return (qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids, q_camids,
          g_camids)


# ----------------------------------------------------------------------------
# evaluate_rank.
# ----------------------------------------------------------------------------
def test_golden_torchreid_cases():
  assert GOLDEN.exists(), f"golden file {GOLDEN} is missing (see tests/testdata/README.md)"
  data = np.load(GOLDEN)
  n_cases = int(data["n_cases"])
  assert n_cases > 0
  for i in range(n_cases):
    get = lambda key, i=i: data[f"c{i}_{key}"]
    r = ev.evaluate_rank(get("distmat"), get("q_pids"), get("g_pids"), get("q_camids"),
                         get("g_camids"), max_rank=50)
    assert r["cmc"].shape == get("cmc").shape, f"case {i}"
    np.testing.assert_allclose(r["cmc"], get("cmc"), rtol=0, atol=1e-6, err_msg=f"case {i}")
    assert abs(r["mAP"] - float(get("mAP"))) < 1e-6, f"case {i}"


@pytest.mark.parametrize("levels,dtype", [(None, np.float32), (7, np.float32),
                                          (5, np.float64), (None, np.float64)])
def test_matches_brute_force(levels, dtype):
  rng = np.random.default_rng(0 if levels is None else levels)
  for trial in range(4):
    case = random_case(rng, 23, 41 + trial, levels=levels, dtype=dtype)
    cmc, m_ap, m_inp, n_valid = brute_force_rank(*case, max_rank=10)
    assert 0 < n_valid < 23, "the case should mix valid and skipped queries"
    r = ev.evaluate_rank(*case, max_rank=10)
    np.testing.assert_allclose(r["cmc"], cmc, atol=1e-12)
    assert r["mAP"] == pytest.approx(m_ap, abs=1e-12)
    assert r["mINP"] == pytest.approx(m_inp, abs=1e-12)
    assert r["num_valid_queries"] == n_valid
    assert isinstance(r["num_valid_queries"], int)


def test_ties_broken_by_gallery_index():
  # Two gallery items at the same distance: the earlier column ranks first.
  dist = np.array([[0.5, 0.5, 0.9]], np.float32)
  first = ev.evaluate_rank(dist, [1], [1, 2, 3], [0], [1, 1, 1], max_rank=3)
  second = ev.evaluate_rank(dist, [1], [2, 1, 3], [0], [1, 1, 1], max_rank=3)
  np.testing.assert_allclose(first["cmc"], [1, 1, 1])
  np.testing.assert_allclose(second["cmc"], [0, 1, 1])
  assert second["mAP"] == pytest.approx(0.5)


def test_junk_is_removed_before_ranking():
  # Gallery order by distance: junk (same pid+cam), distractor, match.
  dist = np.array([[0.1, 0.2, 0.3]], np.float32)
  r = ev.evaluate_rank(dist, [5], [5, 0, 5], [2], [2, 1, 0], max_rank=3)
  np.testing.assert_allclose(r["cmc"], [0, 1, 1])
  assert r["mAP"] == pytest.approx(0.5)
  assert r["mINP"] == pytest.approx(0.5)


def test_max_rank_clipped_to_gallery_size():
  rng = np.random.default_rng(3)
  case = random_case(rng, 9, 12)
  assert len(ev.evaluate_rank(*case, max_rank=50)["cmc"]) == 12
  assert len(ev.evaluate_rank(*case, max_rank=4)["cmc"]) == 4


def test_internal_chunking_does_not_change_results(monkeypatch):
  rng = np.random.default_rng(4)
  case = random_case(rng, 31, 57, levels=9)
  whole = ev.evaluate_rank(*case)
  monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 100)   # one or two rows per chunk
  chunked = ev.evaluate_rank(*case)
  np.testing.assert_array_equal(whole["cmc"], chunked["cmc"])
  assert whole["mAP"] == chunked["mAP"] and whole["mINP"] == chunked["mINP"]


def test_stable_argsort_rows_matches_numpy():
  rng = np.random.default_rng(5)
  d = np.floor(rng.standard_normal((6, 300)) * 3).astype(np.float32)
  d[0, :4] = [-0.0, 0.0, np.inf, -np.inf]
  d[1, ::7] = 0.0
  np.testing.assert_array_equal(metrics.argsort_rows(d), np.argsort(d, axis=1, kind="stable"))
  np.testing.assert_array_equal(metrics.topk_rows(d, 17),
                                np.argsort(d, axis=1, kind="stable")[:, :17])


# ----------------------------------------------------------------------------
# The threshold-and-count ranking (no full sort) against full stable argsorts.
# ----------------------------------------------------------------------------
def tie_heavy_case(rng, n_q, n_g, dtype=np.float32, levels=4):
  """Few distinct distances (+-0.0, +-inf included): ties everywhere, also with junk."""
  dist, q_pids, g_pids, q_camids, g_camids = random_case(rng, n_q, n_g, n_ids=5,
                                                         n_cams=2, levels=levels,
                                                         dtype=dtype)
  dist[rng.random(dist.shape) < 0.1] = -0.0
  dist[rng.random(dist.shape) < 0.05] = np.inf
  dist[rng.random(dist.shape) < 0.05] = -np.inf
  dist[rng.random(dist.shape) < 0.1] = -0.5
  return dist, q_pids, g_pids, q_camids, g_camids


def positions_by_argsort(dist, q_pids, g_pids, q_camids, g_camids):
  """(row, position, junk) of every same-pid item in np.argsort(kind="stable") order."""
  out = []
  for i in range(dist.shape[0]):
    order = np.argsort(dist[i], kind="stable")
    for p in np.flatnonzero(g_pids[order] == q_pids[i]):
      out.append((i, p, g_camids[order[p]] == q_camids[i]))
  return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_match_positions_equal_stable_argsort_positions(dtype):
  rng = np.random.default_rng(19)
  for trial in range(6):
    case = tie_heavy_case(rng, 17, 60 + trial, dtype)
    dist, q_pids, g_pids, q_camids, g_camids = case
    acc = metrics.Accumulator(g_pids.astype(np.int64), g_camids.astype(np.int64), 10)
    rows, pos, junk = metrics.match_positions(dist, *acc.same_pid_items(q_pids, q_camids))
    want = positions_by_argsort(*case)
    # The new path may leave out (or keep) same-pid items after a row's last good
    # match: they are junk and rank after every match.
    last_good = {i: p for i, p, j in want if not j}
    before_last = lambda items: [(int(i), int(p), bool(j)) for i, p, j in items
                                 if i in last_good and p <= last_good[i]]
    got = list(zip(rows, pos, junk))
    assert before_last(got) == before_last(want)
    assert all(j for i, p, j in got if p > last_good[i])
    assert any(j for _, _, j in want), "the case should have junk before good matches"


def accumulate(case, max_rank, sorting):
  dist, q_pids, g_pids, q_camids, g_camids = case
  acc = metrics.Accumulator(g_pids, g_camids, max_rank)
  if sorting:   # the former path: full stable argsort of every row
    acc.add_sorted(acc.sort(dist), q_pids, q_camids)
  else:
    acc.add(dist, q_pids, q_camids)
  return acc


@pytest.mark.parametrize("dense", [None, 0.0, 1.0])
@pytest.mark.parametrize("block", [None, 1, 7])
@pytest.mark.parametrize("dtype,levels", [(np.float32, 4), (np.float32, None),
                                          (np.float64, 3), (np.float16, 6)])
def test_rank_without_sort_is_bit_equal_to_sorting(monkeypatch, dense, block, dtype, levels):
  if block is not None:            # rows per internal block: block boundaries inside chunks
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", block * 70)
  if dense is not None:            # 0: every block keys all items, 1: only candidates
    monkeypatch.setattr(metrics, "_DENSE_FRACTION", dense)
  rng = np.random.default_rng(20)
  for trial in range(4):
    case = list(tie_heavy_case(rng, 29, 70, np.float64, levels=levels or 10**6))
    case[0] = case[0].astype(dtype)
    if trial == 1:
      case[0] = np.asfortranarray(case[0])
    case = [case[0]] + [np.asarray(x, np.int64) for x in case[1:]]
    new, old = accumulate(case, 5, False), accumulate(case, 5, True)
    np.testing.assert_array_equal(new.cmc_hist, old.cmc_hist)
    for a, b in ((new.aps, old.aps), (new.inps, old.inps)):
      a, b = np.concatenate(a), np.concatenate(b)
      assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert new.num_queries == old.num_queries == 29
    r = new.result()
    assert 0 < r["num_valid_queries"] < 29
    cmc, m_ap, m_inp, n_valid = brute_force_rank(*case, max_rank=5)
    np.testing.assert_allclose(r["cmc"], cmc, atol=1e-12)
    assert r["mAP"] == pytest.approx(m_ap, abs=1e-12)
    assert r["mINP"] == pytest.approx(m_inp, abs=1e-12)


def test_ties_at_the_threshold_count_only_earlier_columns():
  # Query pid 1 camera 0. Columns: 0 distractor, 1 junk (pid 1, camera 0),
  # 2 good match, 3 distractor, 4 good match; all but column 4 at distance 0.5.
  dist = np.array([[0.5, 0.5, 0.5, 0.5, 0.7]], np.float32)
  g_pids, g_cams = [2, 1, 1, 3, 1], [1, 0, 1, 1, 1]
  r = ev.evaluate_rank(dist, [1], g_pids, [0], g_cams, max_rank=4)
  # Junk-free order: col 0, col 2 (rank 2), col 3, col 4 (rank 4).
  np.testing.assert_allclose(r["cmc"], [0, 1, 1, 1])
  assert r["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
  assert r["mINP"] == pytest.approx(2 / 4)
  # -0.0 ties with +0.0; the distractor in an earlier column comes first.
  dist = np.array([[0.0, -0.0, 0.0]], np.float32)
  r = ev.evaluate_rank(dist, [1], [2, 1, 1], [0], [1, 1, 1], max_rank=3)
  np.testing.assert_allclose(r["cmc"], [0, 1, 1])
  assert r["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
  # The last good match at +inf: every gallery item is a candidate.
  dist = np.array([[np.inf, 1.0, np.inf, -np.inf]], np.float32)
  r = ev.evaluate_rank(dist, [1], [2, 3, 1, 4], [0], [1, 1, 1, 1], max_rank=2)
  np.testing.assert_allclose(r["cmc"], [0, 0])
  assert r["mINP"] == pytest.approx(1 / 4)


def test_skipped_queries_and_ranks_beyond_max_rank():
  # Row 0: only junk (same pid and camera) -> skipped. Row 1: pid absent -> skipped.
  # Row 2: good match at rank 4 > max_rank = 2 after one junk item is removed.
  dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                   [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
                   [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], np.float32)
  g_pids = [7, 1, 2, 3, 7, 4]
  g_cams = [0, 0, 1, 1, 1, 1]
  q_pids, q_cams = [1, 9, 7], [0, 0, 0]
  r = ev.evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=2)
  assert r["num_valid_queries"] == 1
  np.testing.assert_allclose(r["cmc"], [0, 0])
  assert r["mAP"] == pytest.approx(1 / 4) and r["mINP"] == pytest.approx(1 / 4)
  cmc, m_ap, m_inp, n_valid = brute_force_rank(dist, np.array(q_pids), np.array(g_pids),
                                               np.array(q_cams), np.array(g_cams), 2)
  np.testing.assert_allclose(r["cmc"], cmc)
  assert (r["mAP"], r["mINP"], r["num_valid_queries"]) == (m_ap, m_inp, n_valid)


def test_bad_inputs_name_the_argument():
  rng = np.random.default_rng(6)
  dist, qp, gp, qc, gc = random_case(rng, 5, 8)
  with pytest.raises(ValueError, match="q_pids"):
    ev.evaluate_rank(dist, qp[:4], gp, qc, gc)
  with pytest.raises(ValueError, match="g_camids"):
    ev.evaluate_rank(dist, qp, gp, qc, gc[:, None])
  with pytest.raises(ValueError, match="distmat"):
    ev.evaluate_rank(dist[0], qp, gp, qc, gc)
  with pytest.raises(ValueError, match="max_rank"):
    ev.evaluate_rank(dist, qp, gp, qc, gc, max_rank=0)
  bad = dist.copy()
  bad[1, 2] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    ev.evaluate_rank(bad, qp, gp, qc, gc)
  with pytest.raises(ValueError, match="no valid query"):
    ev.evaluate_rank(dist, qp, gp + 100, qc, gc)


# ----------------------------------------------------------------------------
# Distances and evaluate_features.
# ----------------------------------------------------------------------------
def test_pairwise_distance_against_numpy():
  rng = np.random.default_rng(7)
  a = rng.standard_normal((5, 6)).astype(np.float32)
  b = rng.standard_normal((4, 6)).astype(np.float32)
  sq = ((a[:, None, :].astype(np.float64) - b[None]) ** 2).sum(-1)
  np.testing.assert_allclose(np.asarray(ev.pairwise_distance(a, b)), sq, rtol=1e-5,
                             atol=1e-5)
  cos = 1 - (a @ b.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
  np.testing.assert_allclose(np.asarray(ev.pairwise_distance(a, b, "cosine")), cos,
                             atol=1e-5)
  with pytest.raises(ValueError, match="metric"):
    ev.pairwise_distance(a, b, "manhattan")
  with pytest.raises(ValueError, match="shapes"):
    ev.pairwise_distance(a, b[:, :5])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_chunked_distances_bit_equal_pairwise_distance(metric):
  # evaluate_features computes the product and the epilogue in two jitted steps;
  # the distances are those of the jitted pairwise_distance (its former path).
  pairwise_jit = jax.jit(ev.pairwise_distance, static_argnames="metric")
  rng = np.random.default_rng(21)
  qf = (rng.standard_normal((23, 40)) * rng.uniform(0.1, 10, (23, 1))).astype(np.float32)
  gf = (rng.standard_normal((71, 40)) * rng.uniform(0.1, 10, (71, 1))).astype(np.float32)
  for chunk in (5, 23):
    for s, got in distances._chunked_distances(qf, gf, metric, chunk):
      block = np.zeros((chunk, qf.shape[1]), np.float32)   # chunks are zero-padded
      block[:got.shape[0]] = qf[s:s + chunk]
      want = np.asarray(pairwise_jit(block, gf, metric=metric))[:got.shape[0]]
      assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), (chunk, s)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_features_equal_full_matrix_for_any_chunk_size(metric):
  rng = np.random.default_rng(8)
  qf, gf, qp, gp, qc, gc = clustered_features(rng, 9, 4, 10, 16, noise=1.0)
  full = np.asarray(ev.pairwise_distance(qf, gf, metric))
  want = ev.evaluate_rank(full, qp, gp, qc, gc, max_rank=20)
  assert qf.shape[0] == 36
  for chunk in (1, 5, 16, 36, 100):               # 5 and 16 do not divide 36
    got = ev.evaluate_features(qf, gf, qp, gp, qc, gc, metric=metric, normalize=False,
                               max_rank=20, chunk_size=chunk)
    np.testing.assert_allclose(got["cmc"], want["cmc"], atol=1e-12, err_msg=f"{chunk}")
    for key in ("mAP", "mINP", "num_valid_queries"):
      assert got[key] == pytest.approx(want[key], abs=1e-12), (chunk, key)


def test_normalized_features_scale_invariant_and_metrics_agree():
  rng = np.random.default_rng(9)
  qf, gf, qp, gp, qc, gc = clustered_features(rng, 10, 3, 6, 12, noise=1.2)
  base = ev.evaluate_features(qf, gf, qp, gp, qc, gc, chunk_size=7)
  scaled = ev.evaluate_features(qf * rng.uniform(0.1, 10, (len(qf), 1)),
                                gf * rng.uniform(0.1, 10, (len(gf), 1)), qp, gp, qc, gc,
                                chunk_size=7)
  cosine = ev.evaluate_features(qf, gf, qp, gp, qc, gc, metric="cosine", chunk_size=7)
  raw = ev.evaluate_features(qf * rng.uniform(0.1, 10, (len(qf), 1)),
                             gf * rng.uniform(0.1, 10, (len(gf), 1)), qp, gp, qc, gc,
                             normalize=False, chunk_size=7)
  for other in (scaled, cosine):
    np.testing.assert_allclose(other["cmc"], base["cmc"], atol=1e-12)
    assert other["mAP"] == pytest.approx(base["mAP"], abs=1e-12)
  assert raw["mAP"] != pytest.approx(base["mAP"], abs=1e-6)   # scaling matters unnormalised


def test_features_bad_inputs():
  rng = np.random.default_rng(10)
  qf, gf, qp, gp, qc, gc = clustered_features(rng, 3, 2, 2, 4, noise=0.1)
  with pytest.raises(ValueError, match="qf and gf"):
    ev.evaluate_features(qf, gf[:, :3], qp, gp, qc, gc)
  with pytest.raises(ValueError, match="g_pids"):
    ev.evaluate_features(qf, gf, qp, gp[:-1], qc, gc)
  with pytest.raises(ValueError, match="metric"):
    ev.evaluate_features(qf, gf, qp, gp, qc, gc, metric="l1")
  with pytest.raises(ValueError, match="chunk_size"):
    ev.evaluate_features(qf, gf, qp, gp, qc, gc, chunk_size=0)
  with pytest.raises(ValueError, match="qf"):
    ev.evaluate_features(np.full_like(qf, np.nan), gf, qp, gp, qc, gc)
  for bad in (np.nan, np.inf, -np.inf):               # a single bad entry is found
    g = gf.copy()
    g[-1, 1] = bad
    with pytest.raises(ValueError, match="gf contains NaN or infinite"):
      ev.evaluate_features(qf, g, qp, gp, qc, gc)


# ----------------------------------------------------------------------------
# Re-ranking.
# ----------------------------------------------------------------------------
def rerank_reference(q_g, q_q, g_g, k1, k2, lam):
  """Loop version of the reference algorithm (unvectorised, dense)."""
  n_q = q_q.shape[0]
  full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
  orig = (full / full.max(axis=0)).T
  n = orig.shape[0]
  rank = np.argsort(orig, axis=1, kind="stable")

  def reciprocal(i, k):
    return np.array([j for j in rank[i, :k + 1] if i in rank[j, :k + 1]], int)

  v = np.zeros((n, n))
  for i in range(n):
    own = reciprocal(i, k1)
    grown = list(own)
    for c in own:
      cand = reciprocal(c, int(np.around(k1 / 2)))
      if len(np.intersect1d(cand, own)) > 2 / 3 * len(cand):
        grown.extend(cand)
    grown = np.unique(grown)
    w = np.exp(-orig[i, grown].astype(np.float64))
    v[i, grown] = w / w.sum()
  if k2 != 1:
    v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
  jac = np.array([[1 - (s := np.minimum(v[i], v[j]).sum()) / (2 - s) for j in range(n)]
                  for i in range(n_q)])
  return (jac * (1 - lam) + orig[:n_q] * lam)[:, n_q:]


def _feature_dists(rng, n_ids=6, per_q=2, per_g=5, dim=8, noise=0.7):
  qf, gf, qp, gp, qc, gc = clustered_features(rng, n_ids, per_q, per_g, dim, noise)
  pd = lambda a, b: np.asarray(ev.pairwise_distance(a, b)).astype(np.float64)
  return pd(qf, gf), pd(qf, qf), pd(gf, gf), (qp, gp, qc, gc), (qf, gf)


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (5, 3, 0.5), (4, 1, 0.0)])
def test_rerank_matches_loop_reference(k1, k2, lam):
  q_g, q_q, g_g, _, _ = _feature_dists(np.random.default_rng(11))
  got = ev.rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
  want = rerank_reference(q_g, q_q, g_g, k1, k2, lam)
  assert got.shape == q_g.shape and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_rerank_lambda_one_is_normalized_original_order():
  q_g, q_q, g_g, ids, _ = _feature_dists(np.random.default_rng(12))
  got = ev.rerank(q_g, q_q, g_g, lambda_value=1.0)
  full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
  want = (full / full.max(axis=0)).T[:len(q_q), len(q_q):]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  a = ev.evaluate_rank(got, *ids)
  b = ev.evaluate_rank(q_g, *ids)
  np.testing.assert_allclose(a["cmc"], b["cmc"])
  assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-12)


def test_rerank_raises_map_on_clustered_case():
  rng = np.random.default_rng(13)
  qf, gf, qp, gp, qc, gc = clustered_features(rng, 15, 2, 8, 16, noise=1.3)
  before = ev.evaluate_features(qf, gf, qp, gp, qc, gc)
  after = ev.evaluate_features(qf, gf, qp, gp, qc, gc, rerank=True)
  assert after["mAP"] > before["mAP"] + 0.01, (before["mAP"], after["mAP"])
  assert after["num_valid_queries"] == before["num_valid_queries"]
  # evaluate_features(rerank=True) is evaluate_rank on rerank() of the same distances.
  qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
  gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
  pd = lambda a, b: np.asarray(ev.pairwise_distance(a, b))
  direct = ev.evaluate_rank(ev.rerank(pd(qn, gn), pd(qn, qn), pd(gn, gn)), qp, gp, qc, gc)
  assert after["mAP"] == pytest.approx(direct["mAP"], abs=1e-4)


def test_rerank_shape_checks():
  q_g, q_q, g_g, _, _ = _feature_dists(np.random.default_rng(14))
  with pytest.raises(ValueError, match="q_q_dist"):
    ev.rerank(q_g, q_q[:-1, :-1], g_g)
  with pytest.raises(ValueError, match="g_g_dist"):
    ev.rerank(q_g, q_q, g_g[:, :-1])
  with pytest.raises(ValueError, match="q_g_dist"):
    ev.rerank(q_g[0], q_q, g_g)
  with pytest.raises(ValueError, match="lambda_value"):
    ev.rerank(q_g, q_q, g_g, lambda_value=1.5)


# ----------------------------------------------------------------------------
# CUHK03 single-shot metric.
# ----------------------------------------------------------------------------
def exact_single_shot_cmc(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """Expected CMC over every choice of one kept gallery image per identity."""
  cmcs = []
  for i in range(distmat.shape[0]):
    keep = ~((g_pids == q_pids[i]) & (g_camids == q_camids[i]))
    if not (keep & (g_pids == q_pids[i])).any():
      continue
    pos = np.argsort(np.argsort(distmat[i], kind="stable"), kind="stable")
    groups = [np.flatnonzero(keep & (g_pids == p)) for p in np.unique(g_pids[keep])]
    own = [k for k, grp in enumerate(groups) if g_pids[grp[0]] == q_pids[i]][0]
    hits = np.zeros(max_rank)
    combos = list(itertools.product(*groups))
    for pick in combos:
      p = pos[list(pick)]
      rank = (p <= p[own]).sum()
      hits += np.arange(1, max_rank + 1) >= rank
    cmcs.append(hits / len(combos))
  return np.mean(cmcs, axis=0)


def test_cuhk03_converges_to_exact_expectation():
  rng = np.random.default_rng(15)
  case = random_case(rng, 6, 11, n_ids=4, n_cams=2)
  want = exact_single_shot_cmc(*case, max_rank=5)
  got = ev.evaluate_cuhk03(*case, max_rank=5, num_repeats=4000, seed=1)
  np.testing.assert_allclose(got["cmc"], want, atol=0.03)
  assert np.ptp(want) > 0.1, "the case should be sensitive to the sampling"


def test_cuhk03_seeded_and_chunk_independent(monkeypatch):
  rng = np.random.default_rng(16)
  case = random_case(rng, 20, 60, n_ids=10)
  a = ev.evaluate_cuhk03(*case, seed=3)
  b = ev.evaluate_cuhk03(*case, seed=3)
  np.testing.assert_array_equal(a["cmc"], b["cmc"])
  others = [ev.evaluate_cuhk03(*case, seed=s)["cmc"] for s in (4, 5, 6)]
  assert any(not np.array_equal(a["cmc"], o) for o in others)
  monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 100)
  np.testing.assert_array_equal(ev.evaluate_cuhk03(*case, seed=3)["cmc"], a["cmc"])


def test_cuhk03_equals_market_with_one_image_per_identity():
  rng = np.random.default_rng(17)
  n_g = 30
  g_pids = rng.permutation(n_g) + 1
  q_pids = rng.choice(g_pids, 12, replace=False)
  q_camids, g_camids = np.zeros(12, int), np.ones(n_g, int)
  dist = rng.random((12, n_g)).astype(np.float32)
  market = ev.evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank=10)
  cuhk = ev.evaluate_cuhk03(dist, q_pids, g_pids, q_camids, g_camids, max_rank=10)
  np.testing.assert_allclose(cuhk["cmc"], market["cmc"], atol=1e-12)
  assert cuhk["mAP"] == pytest.approx(market["mAP"], abs=1e-12)
  assert cuhk["num_valid_queries"] == 12


def test_cuhk03_map_is_full_gallery_map_and_bad_seed():
  rng = np.random.default_rng(18)
  case = random_case(rng, 15, 40)
  market = ev.evaluate_rank(*case)
  cuhk = ev.evaluate_cuhk03(*case)
  assert cuhk["mAP"] == pytest.approx(market["mAP"], abs=1e-12)
  assert cuhk["num_valid_queries"] == market["num_valid_queries"]
  with pytest.raises(ValueError, match="seed"):
    ev.evaluate_cuhk03(*case, seed=-1)
  with pytest.raises(ValueError, match="num_repeats"):
    ev.evaluate_cuhk03(*case, num_repeats=0)
