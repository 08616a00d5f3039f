"""The parity harness's comparison: relative differences, per-step reports, the verdict.

Numpy only (no JAX, no torch): `experiments/parity.py` builds both sides and
steps them; this module decides how far apart they are and whether that is
within float32 noise (`verdict`, one run; `verdict_seeds`, pooled over seeds).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

_TINY = 1e-30
BN_MOMENTUM = 0.1          # torch's BatchNorm momentum (flax 0.9)

# ----------------------------------------------------------------------------
# Comparison and report.
# ----------------------------------------------------------------------------
def rel_diff(ours, ref) -> float:
  """max|ours - ref| / max(max|ours|, max|ref|): relative to the tensors' own scale.

  Near-zero elements do not blow the ratio up, and neither does a tensor that
  stays ~0 on one side (a parameter with a mathematically zero gradient, moved
  only by float noise through Adam): the figure is at most 2.
  """
  ours = np.asarray(ours, np.float64)
  ref = np.asarray(ref, np.float64)
  if ours.shape != ref.shape:
    raise ValueError(f"shapes differ: ours {ours.shape} vs reference {ref.shape}")
  if ours.size == 0:
    return 0.0
  diff = float(np.max(np.abs(ours - ref)))
  scale = max(float(np.max(np.abs(ref))), float(np.max(np.abs(ours))))
  if scale < _TINY:
    return 0.0
  return diff / scale


def scalar_rel_diff(ours: float, ref: float) -> float:
  diff = abs(float(ours) - float(ref))
  scale = abs(float(ref))
  if scale < _TINY:
    return 0.0 if diff < _TINY else math.inf
  return diff / scale


@dataclasses.dataclass
class GroupDiff:
  """The largest relative difference over a group of tensors, and where."""
  value: float
  worst: str
  count: int
  missing: tuple[str, ...] = ()   # keys on one side only

  def fmt(self) -> str:
    s = f"{self.value:.2e}" if self.count else "n/a"
    return s + (f" ({self.worst})" if self.worst else "")


def compare_group(ours: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
                  keys: Iterable[str] | None = None) -> GroupDiff:
  """rel_diff of every shared key (or of `keys`); keys on one side only are listed."""
  shared = sorted(set(ours) & set(ref)) if keys is None else sorted(keys)
  missing = tuple(sorted(set(ours) ^ set(ref))) if keys is None else ()
  worst, best = "", 0.0
  for key in shared:
    d = rel_diff(ours[key], ref[key])
    if d > best or not worst:
      best, worst = d, key
  return GroupDiff(best, worst, len(shared), missing)


def bn_var_unbiased(ours_var: np.ndarray, init_var: np.ndarray, n: int,
                    updates: int, momentum: float = BN_MOMENTUM) -> np.ndarray:
  """Our running_var as torch would hold it: torch adds the UNBIASED batch variance.

  With identical batches, v_N = (1-m)^N v_0 + sum_k m (1-m)^(N-k) s_k where
  s_k is the biased variance (flax) or n/(n-1) times it (torch), so torch's is
  (1-m)^N v_0 + (ours - (1-m)^N v_0) * n / (n - 1).
  """
  decay = (1.0 - momentum) ** updates
  base = decay * np.asarray(init_var, np.float64)
  return base + (np.asarray(ours_var, np.float64) - base) * n / max(n - 1, 1)


@dataclasses.dataclass
class Snapshot:
  """One side's state after a step, as {reference key: torch-layout array}."""
  params: dict[str, np.ndarray]      # trainable parameters (+ centers, frozen bias)
  bn: dict[str, np.ndarray]          # running_mean / running_var
  adam_m: dict[str, np.ndarray]
  adam_v: dict[str, np.ndarray]
  adam_count: int | None = None


# Comparisons made per step: ours vs the reference, and, with a float64 run of
# the reference (`--float64_floor`), the reference's own float32 error and ours.
PAIRS = ("ours~ref", "ref~ref64", "ours~ref64")
_PAIR_INDEX = {"ours~ref": (0, 1), "ref~ref64": (1, 2), "ours~ref64": (0, 2)}
LR_TOL = 1e-6          # the schedule is exact arithmetic on both sides
# The weighted sum of the other terms: after step 1 it is judged through them,
# because the reference's own float32 error on a sum can be small by
# cancellation (measured on bot at step 5: total 5.0e-4 from float64 while
# its id and center terms were 1.4e-3 and 1.5e-3 away).
DERIVED_TERMS = ("total",)
FLOOR_FACTOR = 4.0     # see verdict()


@dataclasses.dataclass
class StepReport:
  step: int
  lr: tuple[float, float]                       # (ours, reference)
  terms: dict[str, tuple[float, ...]]           # name -> (ours, ref[, ref64])
  groups: dict[str, dict[str, GroupDiff]]       # pair -> group -> difference

  def term_rel(self, name: str, pair: str = "ours~ref") -> float:
    i, j = _PAIR_INDEX[pair]
    values = self.terms[name]
    return scalar_rel_diff(values[i], values[j])

  @property
  def loss_rel(self) -> float:
    return max((self.term_rel(n) for n in self.terms), default=0.0)


def compare_snapshots(ours: Snapshot, ref: Snapshot, init: Snapshot | None = None,
                      bn_counts: Mapping[str, int] | None = None,
                      updates: int | Mapping[str, int] = 0) -> dict[str, GroupDiff]:
  """Group differences of `ours` against `ref`.

  With `init` (the reference's initial state), also "updates" (p_N - p_0) and,
  with `bn_counts`, "bn_stats_unbiased": `ours`'s running variances converted
  to torch's unbiased update (bn_var_unbiased) before comparing; `updates` is
  the number of running-statistics updates, or a mapping BN module -> number.
  """
  groups = {
      "params": compare_group(ours.params, ref.params),
      "adam_m": compare_group(ours.adam_m, ref.adam_m),
      "adam_v": compare_group(ours.adam_v, ref.adam_v),
      "bn_stats": compare_group(ours.bn, ref.bn),
  }
  if init is not None:
    keys = [k for k in sorted(set(ours.params) & set(ref.params) & set(init.params))
            if np.any(ref.params[k] != init.params[k])]
    d_ours = {k: np.asarray(ours.params[k], np.float64) - init.params[k] for k in keys}
    d_ref = {k: np.asarray(ref.params[k], np.float64) - init.params[k] for k in keys}
    groups["updates"] = compare_group(d_ours, d_ref, keys)
    if bn_counts:
      corrected = dict(ours.bn)
      for key, n in bn_counts.items():
        var_key = f"{key}.running_var"
        if var_key in ours.bn and var_key in init.bn:
          n_upd = updates.get(key, 0) if isinstance(updates, Mapping) else updates
          corrected[var_key] = bn_var_unbiased(ours.bn[var_key], init.bn[var_key],
                                               n, n_upd)
      groups["bn_stats_unbiased"] = compare_group(corrected, ref.bn)
  return groups


def verdict(reports: Sequence[StepReport], tol: float, *, factor: float = FLOOR_FACTOR,
            bn_group: str = "bn_stats", step1_floor: bool = False) -> tuple[bool, str]:
  """PASS or FAIL of one run (one seed), with the figures that decided it.

  Always: the lr of every step within LR_TOL, every loss term of step 1
  (identical weights and batch: a pure forward comparison) within `tol`, and
  the optimizer replay (our optimizers on the reference's gradients: groups
  opt_params, opt_adam_m, opt_adam_v) within `tol` at every step.
  Then every loss term and the groups params, adam_m, adam_v and `bn_group`
  at every step: without a float64 run, |ours - ref| within `tol`; with one,
  ours' distance from the float64 reference within max(tol, factor x the
  reference's own float32 distance from it). `factor` covers the spread among
  float32 implementations: the reference run channels_last instead of
  contiguous (another set of oneDNN kernels) sits up to ~2x further from
  float64 than the default run on the ResNet-50 gradients.
  `step1_floor` (anon): with a float64 run, a step-1 loss term also passes when
  OURS is within `tol` of the float64 value (the reference's own float32 value
  can be further off: AGW's weighted triplet at random init, ~1e-4).
  """
  return verdict_seeds([reports], tol, factor=factor, bn_group=bn_group,
                       step1_floor=step1_floor)


def verdict_seeds(runs: Sequence[Sequence[StepReport]], tol: float, *,
                  factor: float = FLOOR_FACTOR, bn_group: str = "bn_stats",
                  step1_floor: bool = False) -> tuple[bool, str]:
  """`verdict` over runs from several seeds (each: its own weights and batches).

  The exact checks (lr, step-1 losses, optimizer replay, and everything when
  there is no float64 run) must hold in every run. A quantity judged against
  the reference's own float32 error is pooled: its ratio d / max(tol, factor x
  floor) at each step is averaged over the runs geometrically and must be <= 1.
  The reason: after step 1 the float32 error is one draw of a chaotic process
  and varies by 10-20x between seeds for the same quantity (anon at 64x32,
  id_P at step 3: the reference's own float32 error 7.1e-5 / 1.5e-3 / 7.9e-4
  for seeds 0 / 1 / 2), so a single run's 4x bound fails an equally exact
  float32 implementation now and then, while a systematic deviation shows in
  every seed. With one run this is exactly `verdict`'s rule.
  """
  if not runs or not all(runs):
    return False, "FAIL: no steps ran"
  failures = []
  # (quantity, step) -> [(ratio, d, allowed), ...] over runs; pooled or exact
  pooled: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
  exact: dict[str, tuple[float, float, float, int, int]] = {}
  groups = ("params", "adam_m", "adam_v", bn_group)
  replay_groups = ("opt_params", "opt_adam_m", "opt_adam_v")

  def ratio_of(d: float, allowed: float) -> float:
    return d / allowed if allowed > 0 else math.inf

  for k, reports in enumerate(runs):
    floor = "ref~ref64" in reports[-1].groups
    lr_rel = max(scalar_rel_diff(*r.lr) for r in reports)
    if lr_rel > LR_TOL:
      bad = next(r.step for r in reports if scalar_rel_diff(*r.lr) > LR_TOL)
      failures.append(f"lr (rel {lr_rel:.1e}, first at step {bad})")
    for name in reports[0].terms:
      d = reports[0].term_rel(name)
      if step1_floor and floor and reports[0].term_rel(name, "ours~ref64") <= tol:
        continue
      if not d <= tol:
        failures.append(f"step-1 loss {name} (rel {d:.1e})")

    def check(quantity: str, d: float, floor_d: float | None, step: int):
      if floor_d is None:
        ratio = ratio_of(d, tol)
        if quantity not in exact or ratio > exact[quantity][0]:
          exact[quantity] = (ratio, d, tol, step, k)
      else:
        allowed = max(tol, factor * floor_d)
        pooled.setdefault((quantity, step), []).append((ratio_of(d, allowed), d, allowed))

    for r in reports:
      for name in r.terms:
        if floor and name in DERIVED_TERMS:
          continue   # judged through its terms (see DERIVED_TERMS)
        if floor:
          check(f"loss {name}", r.term_rel(name, "ours~ref64"),
                r.term_rel(name, "ref~ref64"), r.step)
        else:
          check(f"loss {name}", r.term_rel(name), None, r.step)
      for g in replay_groups:
        if g in r.groups["ours~ref"]:
          check(g, r.groups["ours~ref"][g].value, None, r.step)
      for g in groups:
        if g not in r.groups["ours~ref"]:
          continue
        if floor:
          check(g, r.groups["ours~ref64"][g].value, r.groups["ref~ref64"][g].value, r.step)
        else:
          check(g, r.groups["ours~ref"][g].value, None, r.step)
  seed_word = "" if len(runs) == 1 else " of run {}"
  for quantity, (ratio, d, allowed, step, k) in exact.items():
    if not ratio <= 1.0:
      failures.append(f"{quantity} (rel {d:.1e} > allowed {allowed:.1e} at step {step}"
                      f"{seed_word.format(k)})")
  worst: dict[str, tuple[float, int, list]] = {}
  for (quantity, step), items in pooled.items():
    ratios = [r for r, _, _ in items]
    mean = (math.inf if any(math.isinf(r) or math.isnan(r) for r in ratios) else
            math.exp(sum(math.log(max(r, 1e-300)) for r in ratios) / len(ratios)))
    if quantity not in worst or mean > worst[quantity][0]:
      worst[quantity] = (mean, step, items)
  for quantity, (mean, step, items) in worst.items():
    if not mean <= 1.0:
      if len(items) == 1:
        _, d, allowed = items[0]
        failures.append(f"{quantity} (rel {d:.1e} > allowed {allowed:.1e} at step {step})")
      else:
        failures.append(f"{quantity} (geometric mean over {len(items)} runs of rel / allowed "
                        f"{mean:.2f} > 1 at step {step}: "
                        + ", ".join(f"{d:.1e} / {a:.1e}" for _, d, a in items) + ")")
  last = runs[-1][-1]
  missing = sorted({m for g in groups if g in last.groups["ours~ref"]
                    for m in last.groups["ours~ref"][g].missing})
  if missing:
    failures.append(f"keys on one side only: {', '.join(missing[:5])}")
  floor = "ref~ref64" in last.groups
  basis = (f"ours vs the float64 reference within max({tol:.0e}, {factor:g} x the "
           "reference's float32 error)" if floor else f"tolerance {tol:.0e}")
  if len(runs) > 1:
    basis += f", geometric mean over {len(runs)} runs"
  lr_rel = max(scalar_rel_diff(*r.lr) for reports in runs for r in reports)
  shown = ", ".join(
      f"{g} {max(rs[-1].groups['ours~ref'][g].value for rs in runs):.2e}" for g in groups
      if g in last.groups["ours~ref"])
  summary = (f"after {last.step} steps, ours vs reference (float32): losses "
             f"{max(r.loss_rel for reports in runs for r in reports):.2e}, {shown}; "
             f"lr {lr_rel:.1e}")
  if failures:
    return False, f"FAIL ({basis}): {summary}. Failed: " + "; ".join(failures)
  return True, f"PASS ({basis}): {summary}"


def format_step(report: StepReport) -> str:
  floor = "ref~ref64" in report.groups
  lines = [f"step {report.step}: lr ours {report.lr[0]:.6e} ref {report.lr[1]:.6e}"
           f" (rel {scalar_rel_diff(*report.lr):.1e})"]
  for name, values in report.terms.items():
    line = (f"  {name:<9} ours {values[0]:14.8f}  ref {values[1]:14.8f}"
            + (f"  ref64 {values[2]:14.8f}" if floor else "")
            + f"  rel {report.term_rel(name):.2e}")
    if floor:
      line += (f"  ref~ref64 {report.term_rel(name, 'ref~ref64'):.1e}"
               f"  ours~ref64 {report.term_rel(name, 'ours~ref64'):.1e}")
    lines.append(line)
  for name, g in report.groups["ours~ref"].items():
    line = f"  {name:<18} {g.fmt()}"
    if floor and name in report.groups["ref~ref64"]:
      line += (f"   ref~ref64 {report.groups['ref~ref64'][name].value:.1e}"
               f"  ours~ref64 {report.groups['ours~ref64'][name].value:.1e}")
    lines.append(line)
  return "\n".join(lines)


def format_table(reports: Sequence[StepReport]) -> str:
  """Markdown table: per loss term and group, the largest relative difference."""
  if not reports:
    return ""
  last = reports[-1]
  floor = "ref~ref64" in last.groups
  head = "| quantity | ours vs ref, max over steps | ours vs ref, last step |"
  rule = "| --- | --- | --- |"
  if floor:
    head += " ref f32 vs ref f64, last | ours vs ref f64, last |"
    rule += " --- | --- |"
  rows = [head, rule]
  for name in last.terms:
    per = [r.term_rel(name) for r in reports if name in r.terms]
    row = f"| loss `{name}` | {max(per):.2e} | {per[-1]:.2e} |"
    if floor:
      row += (f" {last.term_rel(name, 'ref~ref64'):.2e} |"
              f" {last.term_rel(name, 'ours~ref64'):.2e} |")
    rows.append(row)
  lr = [scalar_rel_diff(*r.lr) for r in reports]
  rows.append(f"| lr | {max(lr):.2e} | {lr[-1]:.2e} |" + (" | |" if floor else ""))
  for g, diff in last.groups["ours~ref"].items():
    vals = [r.groups["ours~ref"][g].value for r in reports]
    row = f"| {g} | {max(vals):.2e} | {diff.fmt()} |"
    if floor:
      f_ref = last.groups["ref~ref64"].get(g)
      f_ours = last.groups["ours~ref64"].get(g)
      row += (f" {f_ref.value:.2e} |" if f_ref else " |") + (
          f" {f_ours.value:.2e} |" if f_ours else " |")
    rows.append(row)
  return "\n".join(rows)


# ----------------------------------------------------------------------------
# Step-1 gradients, tensor by tensor.
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class GradRow:
  """One tensor's step-1 gradient: each float32 side's distance from float64."""
  key: str
  norm: float       # ||m64||, the float64 reference's first moment
  ours: float       # ||m_ours - m64|| / ||m64||
  ref: float        # ||m_ref - m64|| / ||m64||
  size: int = 0     # elements
  ours_flips: int = 0   # elements whose sign differs from float64's (Adam's step 1
  ref_flips: int = 0    # moves each weight by -lr sign(m): these move the other way)
  mass: float = 0.0       # sum |m64|
  ours_flip_mass: float = 0.0   # sum |m64| over ours_flips' elements
  ref_flip_mass: float = 0.0

  @property
  def ratio(self) -> float:
    return self.ours / max(self.ref, _TINY)


def _norm_rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = float(np.linalg.norm(b))
  return float(np.linalg.norm(a - b)) / scale if scale > _TINY else 0.0


def gradient_rows(ours_m: Mapping[str, np.ndarray], ref_m: Mapping[str, np.ndarray],
                  floor_m: Mapping[str, np.ndarray], prefix: str = "") -> list[GradRow]:
  """Per tensor (keys starting with `prefix`), Adam's first moment after step 1.

  After one step m = (1 - beta1) (g + wd p0) with the same p0 on every side, so
  m's differences are the gradients' differences. Each float32 side's distance
  from the float64 run is relative to the tensor's own norm (not the largest
  element, as rel_diff): a tensor whose true gradient is zero (a bias before a
  BatchNorm) shows ~1 on both sides and ratio ~1.
  """
  keys = sorted(k for k in set(ours_m) & set(ref_m) & set(floor_m) if k.startswith(prefix))
  rows = []
  for k in keys:
    f = np.asarray(floor_m[k], np.float64)
    o_flip, r_flip = _flipped(ours_m[k], f), _flipped(ref_m[k], f)
    rows.append(GradRow(k, float(np.linalg.norm(f)), _norm_rel(ours_m[k], f),
                        _norm_rel(ref_m[k], f), int(f.size), int(o_flip.sum()),
                        int(r_flip.sum()), float(np.abs(f).sum()),
                        float(np.abs(f[o_flip]).sum()), float(np.abs(f[r_flip]).sum())))
  return rows


def _flipped(a, floor) -> np.ndarray:
  """Where `a`'s sign differs from `floor`'s (both zero counts as agreeing)."""
  return np.sign(np.asarray(a, np.float64)) != np.sign(np.asarray(floor, np.float64))


def sign_flips(a, floor) -> int:
  """How many elements of `a` have another sign than `floor`'s."""
  return int(_flipped(a, floor).sum())


def network_of(key: str) -> str:
  """The network a parameter belongs to: its first name component ("netD1", "base")."""
  return key.split(".", 1)[0]


def format_update_signs(rows: Sequence[GradRow]) -> str:
  """Per network: how many elements of Adam's first step move against float64's
  direction on each float32 side (at step 1 Adam moves every weight by about
  -lr sign(g + wd p), so a sign that rounding flips is a whole-lr difference), and
  their share of the gradient's L1 mass (what the flips change, to first order, in
  the next step's loss: elements whose gradient is float noise weigh nothing)."""
  nets: dict[str, np.ndarray] = {}
  for r in rows:
    acc = nets.setdefault(network_of(r.key), np.zeros(6))
    acc += (r.size, r.ours_flips, r.ref_flips, r.mass, r.ours_flip_mass, r.ref_flip_mass)
  lines = ["step-1 update signs: elements whose first Adam step goes against float64's, "
           "and their share of the gradient's L1 mass",
           f"  {'network':<10} {'elements':>10} {'ours':>7} {'ref':>7} {'mass ours':>10} "
           f"{'mass ref':>10}"]
  for net, (size, ours, ref, mass, o_mass, r_mass) in nets.items():
    scale = mass if mass > 0 else 1.0
    lines.append(f"  {net:<10} {int(size):>10} {int(ours):>7} {int(ref):>7} "
                 f"{o_mass / scale:10.1e} {r_mass / scale:10.1e}")
  return "\n".join(lines)


def format_gradient_rows(rows: Sequence[GradRow], top: int = 15) -> str:
  """Summary (geometric mean and spread of ours/ref over tensors whose gradient
  is not float noise on the reference's side, i.e. ref < 0.1) and the `top`
  tensors with the largest ratio."""
  if not rows:
    return "step-1 gradients: no shared tensors"
  signal = [r for r in rows if r.ref < 0.1 and r.ours > 0]
  lines = []
  if signal:
    logs = np.log([max(r.ratio, 1e-12) for r in signal])
    q = np.exp(np.percentile(logs, [10, 50, 90]))
    lines.append(
        f"step-1 gradients, {len(signal)} of {len(rows)} tensors above float noise: "
        f"ours/ref distance from float64, geometric mean {math.exp(logs.mean()):.2f}, "
        f"p10/p50/p90 {q[0]:.2f}/{q[1]:.2f}/{q[2]:.2f}, "
        f"{sum(r.ratio > 4 for r in signal)} above 4x")
  lines.append(f"  {'tensor':<44} {'|m64|':>9} {'ours~64':>9} {'ref~64':>9} {'ratio':>7}")
  for r in sorted(rows, key=lambda r: -r.ratio)[:top]:
    lines.append(f"  {r.key:<44} {r.norm:9.2e} {r.ours:9.2e} {r.ref:9.2e} {r.ratio:7.2f}")
  lines.append(format_update_signs(rows))
  return "\n".join(lines)


def resync_verdict(runs: Sequence[Sequence[Mapping[str, tuple[float, float]]]], tol: float,
                   factor: float = FLOOR_FACTOR) -> tuple[bool, str]:
  """Each (step, term): ours vs ref within max(tol, factor x the reference's own
  float32 error at that state) (tol alone without a floor), as the ratio's
  geometric mean over the seeds (a float32 error is one draw, see `verdict_seeds`)."""
  worst = (0.0, "", 0)
  for i in range(min(len(r) for r in runs)):
    for name in runs[0][i]:
      ratios = []
      for run in runs:
        rel, own = run[i][name]
        allowed = tol if math.isnan(own) else max(tol, factor * own)
        ratios.append(max(rel, 1e-30) / allowed)
      g = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
      if g > worst[0]:
        worst = (g, name, i + 1)
  ok = worst[0] <= 1.0
  rule = (f"max({tol:g}, {factor:g} x the reference's own float32 error at the same weights)"
          if not any(math.isnan(v[1]) for run in runs for row in run for v in row.values())
          else f"{tol:g}")
  return ok, (f"{'PASS' if ok else 'FAIL'} (resync: every step from the reference's weights, "
              f"every loss term within {rule}, geometric mean over {len(runs)} run(s)): "
              f"largest ratio {worst[0]:.2f} ({worst[1]} at step {worst[2]})")
