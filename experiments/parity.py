"""Training-step parity against a reference implementation's own PyTorch code (issue 18).

    python experiments/parity.py --reference=bot --reference_dir=/tmp/ref_bot \
        [--steps 5] [--batch 16] [--height 256 --width 128]

builds the reference's model, losses, optimizers and LR scheduler from the
reference checkout itself (DIR is put on sys.path; torch comes from the user's
environment, never from this package), copies ONE set of initial weights (the
reference's random init) into our JAX method, feeds both sides the same batches
(augmentation off) and runs N complete training steps on each: forward, every
loss term, backward, the optimizer with its schedule and warm-up, batch-norm
running statistics, the center-loss centers with their own SGD. Per step it
prints each loss term on both sides and the largest relative difference of the
losses, parameters, Adam moments and BN statistics, then one verdict line
against `--tol` (default 1e-4; see TOLERANCE below).

References:
  bot   michuanhaohao/reid-strong-baseline, configs/softmax_triplet_with_center.yml
        (its create_supervised_trainer_with_center step, experiments/parity_bot.py)
        against privreid_jax.methods.baseline.Method on configs/market.py with
        the values mapped from the reference's config.
  twin  our own PyTorch twin (experiments/torch_reference.py): no checkout
        needed; a self-check of this harness (no center loss, constant lr).
  anon  whuzjw/privacy-reid (method A), configs/AGW_baseline.yml in GCR mode
        (its create_supervised_trainer step: D1/D2 step, then the joint G, G_R,
        C step with the center SGD; experiments/parity_anon.py) against
        privreid_jax.methods.anonymization.Method on configs/anon_market.py:mosaic,agw
        with the values mapped from the reference's config. `--ngf/--ndf` size
        the U-Nets and PatchGANs (64 as the reference); the U-Net depth follows
        the image (7 downs, unet_128, at 256x128).

`--align` names known deviations to neutralise for diagnosis (see the
reference's module): the verdict of an aligned run says what remains once those
are accounted for. Nothing here changes package code.

Relative differences (`rel_diff`): a tensor's difference is max|ours - ref|
divided by the larger of max|ours| and max|ref| (the tensors' own scale), so
near-zero elements do not blow up the ratio; a group's figure is the largest over its
tensors. Loss terms: |ours - ref| / |ref|. "updates" compares the change since
the initial weights, (p_N - p_0), the same way: the most sensitive view, shown
for information, not part of the verdict. "bn_stats_unbiased" converts our
running variances to torch's unbiased update (n/(n-1) on each batch variance)
before comparing, which isolates that known difference.

TOLERANCE. The forward pass is well conditioned: on identical weights and
batch (step 1) every loss term agrees to ~1e-7..1e-5 relative in float32, so
step-1 losses are held to `--tol` (1e-4). The backward pass of a randomly
initialised ResNet-50 with BatchNorm is not: measured on the bot reference at
256x128, batch 16, PyTorch's own float32 weight gradients are up to ~9% (median
~2%) of the tensor's scale away from the same code in float64 (3% median
channels_last), and Adam's first steps turn such gradient errors into sign
flips of whole updates. No float32 implementation can then agree with another
to 1e-4 on parameters or optimizer state after the first step. So by default
(`--float64_floor`) the reference also runs in float64 from the same weights,
and every later quantity is judged by how far OUR float32 run is from that
float64 run, against max(tol, FLOOR_FACTOR x the reference's own float32
distance from it); the lr of every step must match to 1e-6. Without the
float64 run (`--nofloat64_floor`) everything is held to `--tol`. The float64
run goes first, alone, and is replayed from a temporary folder (RecordedSide),
so at most two models are in memory at once. After step 1 that float32 error
is one draw of a chaotic process: `--seeds 0,1,2` runs the comparison once per
seed and pools those comparisons over the runs (verdict_seeds).
"""

# This file is the driver and its flags (the docstring above is --help's text,
# so the map of the pieces is a comment): parity_batches (the shared batches),
# parity_layout (our trees <-> a reference's names), parity_jax (our side, the
# optimizer replay), parity_reference (the reference interface, the twin, the
# recorded float64 run, torch helpers), parity_verdict (the comparisons and
# verdicts, numpy only); the references parity_bot and parity_anon (with
# parity_anon_layout, _batches, _jax and _shims).

from __future__ import annotations

import gc
import math
import os
import sys
import tempfile
from typing import Callable, Mapping, Sequence

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

# pylint: disable=wrong-import-position
from experiments.parity_batches import Batch, make_batches
from experiments.parity_jax import JaxSide, OptimizerReplay, load_config
from experiments.parity_reference import RecordedSide, ReferenceSide, TwinReference
from experiments.parity_verdict import (StepReport, compare_group, compare_snapshots,
                                        format_gradient_rows, format_step, format_table,
                                        gradient_rows, rel_diff, resync_verdict,
                                        scalar_rel_diff, verdict, verdict_seeds)

DEFAULT_TOL = 1e-4


def _terms(ref: ReferenceSide, ours: Mapping[str, float], *refs: Mapping[str, float]
           ) -> dict[str, tuple[float, ...]]:
  out = {}
  for our_name, ref_name in ref.term_map.items():
    if our_name in ours and all(ref_name in r for r in refs):
      out[ref_name] = (ours[our_name],) + tuple(r[ref_name] for r in refs)
  return out


def run_parity(ref: ReferenceSide, ours: JaxSide, batches: Sequence[Batch],
               floor: ReferenceSide | None = None,
               log: Callable[[str], None] = print,
               grads_top: int = 0) -> list[StepReport]:
  """Copies the reference's initial weights into ours, steps both, compares.

  `floor`: the same reference in float64 from the same initial weights; its
  distance from the float32 reference is the float32 error the reference
  itself makes (reported, and used by `verdict`). `grads_top` > 0 (with a
  floor): after step 1, the per-tensor gradient table (`gradient_rows`).
  """
  init = ref.initial_weights()
  ours.init_from(init, batches[0])
  start_ours, start_ref = ours.snapshot(), ref.snapshot()
  groups = compare_snapshots(start_ours, start_ref)
  log("step 0 (after the weight copy): " + ", ".join(
      f"{k} {v.fmt()}" for k, v in groups.items() if k in ("params", "bn_stats")))
  if groups["params"].missing or groups["bn_stats"].missing:
    log("  keys on one side only: " + ", ".join(
        groups["params"].missing + groups["bn_stats"].missing))
  if floor is not None:
    init64 = floor.initial_weights()
    worst = max(rel_diff(np.asarray(init64[k], np.float32), init[k]) for k in init)
    if set(init64) != set(init) or worst != 0:
      raise RuntimeError("the float64 reference does not start from the same weights")
  replay = ours.make_replay() if hasattr(ours, "make_replay") else OptimizerReplay(ours)
  per_step = getattr(ref, "bn_updates_per_step", None)   # anon: BN updates per step
  reports = []
  for i, batch in enumerate(batches, 1):
    updates = {k: i * v for k, v in per_step.items()} if per_step else i
    r_terms = ref.step(batch)
    s_ref = ref.snapshot()
    replay.step(ref.grads(), s_ref.bn)
    o_terms = ours.step(batch)
    s_ours = ours.snapshot()
    groups = {"ours~ref": compare_snapshots(s_ours, s_ref, start_ref, ref.bn_counts,
                                            updates=updates)}
    s_replay = replay.snapshot()
    groups["ours~ref"].update({
        "opt_params": compare_group(s_replay.params, s_ref.params),
        "opt_adam_m": compare_group(s_replay.adam_m, s_ref.adam_m),
        "opt_adam_v": compare_group(s_replay.adam_v, s_ref.adam_v),
    })
    if s_replay.adam_count != s_ref.adam_count or s_ours.adam_count != s_ref.adam_count:
      log(f"  Adam step counts differ: ours {s_ours.adam_count}, replay "
          f"{s_replay.adam_count}, reference {s_ref.adam_count}")
    if floor is not None:
      f_terms = floor.step(batch)
      s_floor = floor.snapshot()
      terms = _terms(ref, o_terms, r_terms, f_terms)
      groups["ref~ref64"] = compare_snapshots(s_ref, s_floor, start_ref)
      groups["ref~ref64"]["bn_stats_unbiased"] = groups["ref~ref64"]["bn_stats"]
      groups["ours~ref64"] = compare_snapshots(s_ours, s_floor, start_ref,
                                               ref.bn_counts, updates=updates)
      if i == 1 and grads_top:
        log(format_gradient_rows(gradient_rows(s_ours.adam_m, s_ref.adam_m,
                                               s_floor.adam_m), grads_top))
    else:
      terms = _terms(ref, o_terms, r_terms)
    report = StepReport(i, (o_terms.get("lr", math.nan), r_terms["lr"]), terms, groups)
    reports.append(report)
    log(format_step(report))
  return reports


REFERENCES = ("bot", "twin", "anon")
GENERIC_ALIGN = ("bn_unbiased",)   # handled here, for any reference


def build_reference(args, dtype: str = "float32") -> ReferenceSide:
  if args.reference == "twin":
    config = load_config("configs/synthetic.py", "tiny")
    config.model.backbone = args.backbone or "resnet18"
    config.data.height, config.data.width = args.height, args.width
    config.data.batch_size = args.batch
    config.data.num_instances = args.num_instances
    return TwinReference(config, num_classes=args.num_classes,
                         steps_per_epoch=args.steps_per_epoch, seed=args.seed, dtype=dtype)
  if not args.reference_dir:
    raise SystemExit(f"--reference={args.reference} needs --reference_dir "
                     "(a local checkout of the reference repository)")
  if args.reference == "bot":
    from experiments import parity_bot  # pylint: disable=import-outside-toplevel
    return parity_bot.BotReference(
        args.reference_dir, batch=args.batch, num_instances=args.num_instances,
        height=args.height, width=args.width, num_classes=args.num_classes,
        steps_per_epoch=args.steps_per_epoch, seed=args.seed, dtype=dtype,
        align=tuple(a for a in args.align.split(",") if a and a not in GENERIC_ALIGN))
  if args.reference == "anon":
    from experiments import parity_anon  # pylint: disable=import-outside-toplevel
    return parity_anon.AnonReference(
        args.reference_dir, batch=args.batch, num_instances=args.num_instances,
        height=args.height, width=args.width, num_classes=args.num_classes,
        steps_per_epoch=args.steps_per_epoch, seed=args.seed, dtype=dtype,
        align=tuple(a for a in args.align.split(",") if a and a not in GENERIC_ALIGN),
        ngf=args.ngf, ndf=args.ndf)
  raise SystemExit(f"--reference={args.reference}: not implemented")


def _define(fv):
  """The tool's flags (absl, snake_case) on `fv`."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("reference", None, list(REFERENCES), "Which reference.", flag_values=fv)
  flags.DEFINE_string("reference_dir", "", "Local checkout of the reference repository "
                      "(put on sys.path).", flag_values=fv)
  flags.DEFINE_integer("steps", 5, "Training steps on each side.", flag_values=fv)
  flags.DEFINE_integer("batch", 16, "Batch size, P x K.", flag_values=fv)
  flags.DEFINE_integer("num_instances", 4, "K images per identity.", flag_values=fv)
  flags.DEFINE_integer("height", 256, "Image height.", flag_values=fv)
  flags.DEFINE_integer("width", 128, "Image width.", flag_values=fv)
  flags.DEFINE_integer("num_classes", 751, "Classifier size (Market-1501's training "
                       "identities).", flag_values=fv)
  flags.DEFINE_integer("steps_per_epoch", 2, "Optimizer steps per epoch; small so the "
                       "warm-up moves within the steps.", flag_values=fv)
  flags.DEFINE_string("backbone", "", "twin only: resnet18 | resnet34 | resnet50.",
                      flag_values=fv)
  flags.DEFINE_integer("ngf", 64, "anon only: U-Net width of G and G_R (MODEL.NGF).",
                       flag_values=fv)
  flags.DEFINE_integer("ndf", 64, "anon only: PatchGAN width of D1 and D2 (MODEL.NDF).",
                       flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the reference's init and of the batches.",
                       flag_values=fv)
  flags.DEFINE_list("seeds", [], "Several seeds, one complete run each, judged together "
                    "(verdict_seeds: the float32-noise comparisons pooled over runs); "
                    "replaces --seed.", flag_values=fv)
  flags.DEFINE_float("tol", DEFAULT_TOL, "Relative tolerance.", flag_values=fv)
  flags.DEFINE_boolean("float64_floor", True, "Also run the reference in float64 and "
                       "judge against it.", flag_values=fv)
  flags.DEFINE_integer("grads_top", 0, "With the float64 floor: after step 1, a "
                       "per-tensor table of the gradients (Adam's first moment), each "
                       "float32 side's distance from float64, this many worst rows.",
                       flag_values=fv)
  flags.DEFINE_boolean("grads_only", False, "Only step 1's gradients, tensor by tensor "
                       "(--grads_top rows, default 20), with one model in memory at a time: "
                       "the reference in float32 and float64 recorded to disk, then ours.",
                       flag_values=fv)
  flags.DEFINE_boolean("resync", False, "Before each step, copy the reference's current "
                       "float32 weights into ours and compare that step's loss terms only "
                       "(the step function without the trajectory's float32 chaos); with "
                       "the float64 floor the reference in float64 steps from the same "
                       "weights. One model in memory at a time.", flag_values=fv)
  flags.DEFINE_string("align", "", "Comma-separated known deviations to neutralise "
                      "(diagnosis): bn_unbiased (any reference: judge BN variances after "
                      "converting ours to torch's unbiased update); bot: schedule, "
                      "stem_relu; anon: d_bn_g_step, d_fake_first.", flag_values=fv)
  flags.mark_flag_as_required("reference", flag_values=fv)
  return fv


def parse_args(argv=None):
  """The flags of `argv` (without the program name; default sys.argv[1:])."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from privreid_jax import cli  # pylint: disable=import-outside-toplevel
  argv = list(sys.argv[1:] if argv is None else argv)
  fv = _define(flags.FlagValues())
  cli.parse_tool_flags(fv, ["python experiments/parity.py", *argv], __doc__)
  return fv


def _batches_for(args, side, seed: int) -> list[Batch]:
  if hasattr(side, "jax_side"):     # anon: its own method, batches with targets
    return side.make_batches(args.steps, args.batch, args.num_instances, args.height,
                             args.width, seed=seed)
  return make_batches(args.steps, args.batch, args.num_instances, side.num_classes,
                      args.height, args.width, seed=seed)


def _our_side(ref: ReferenceSide) -> JaxSide:
  if hasattr(ref, "jax_side"):
    return ref.jax_side()
  return JaxSide(ref.config, num_classes=ref.num_classes,
                 steps_per_epoch=ref.steps_per_epoch, layout=ref.layout)


def run_seed(args, seed: int) -> tuple[list[StepReport], bool]:
  """One complete parity run (reference, optional float64 floor, ours) at `seed`:
  its reports and whether the reference asks for verdict's step-1 floor."""
  args.seed = seed
  ref = build_reference(args)
  print(f"reference: {ref.description}; seed {seed}")
  batches = _batches_for(args, ref, seed)
  floor, tmp = None, None
  if args.float64_floor:       # before ours, alone, recorded to disk (RecordedSide)
    ref64 = build_reference(args, "float64")
    tmp = tempfile.TemporaryDirectory(prefix="parity_float64_")
    floor = RecordedSide.record(ref64, batches, tmp.name)
    del ref64
    gc.collect()
  ours = _our_side(ref)
  print(f"batches: {args.steps} x {args.batch} images "
        f"({args.batch // args.num_instances} ids x {args.num_instances}) at "
        f"{args.height}x{args.width}, {ref.num_classes} classes, "
        f"{ref.steps_per_epoch} steps per epoch, augmentation off"
        + ("; float64 run of the reference as the float32 noise floor" if floor else ""))
  try:
    reports = run_parity(ref, ours, batches, floor=floor, grads_top=args.grads_top)
  finally:
    if tmp is not None:
      tmp.cleanup()
  print()
  print(format_table(reports))
  return reports, bool(getattr(ref, "step1_floor", False))


def run_grads(args, seed: int, top: int) -> list:
  """Step 1's gradients only, one model in memory at a time (the reference in
  float32, then in float64, are recorded to disk and freed before ours runs):
  the per-tensor table of `gradient_rows` and the step-1 loss terms."""
  args.seed = seed
  ref = build_reference(args)
  print(f"reference: {ref.description}; seed {seed}; step-1 gradients only")
  batches = _batches_for(args, ref, seed)[:1]
  ours = _our_side(ref)
  term_map = dict(ref.term_map)
  with tempfile.TemporaryDirectory(prefix="parity_grads_") as tmp:
    rec32 = RecordedSide.record(ref, batches, os.path.join(tmp, "f32"),
                                label="float32 reference")
    del ref
    gc.collect()
    ref64 = build_reference(args, "float64")
    rec64 = RecordedSide.record(ref64, batches, os.path.join(tmp, "f64"))
    del ref64
    gc.collect()
    ours.init_from(rec32.initial_weights(), batches[0])
    o_terms = ours.step(batches[0])
    s_ours = ours.snapshot()
    r_terms, f_terms = rec32.step(batches[0]), rec64.step(batches[0])
    for our_name, ref_name in term_map.items():
      if our_name in o_terms and ref_name in r_terms and ref_name in f_terms:
        f = f_terms[ref_name]
        print(f"  loss {ref_name:<9} ours~ref64 {scalar_rel_diff(o_terms[our_name], f):.1e}"
              f"  ref~ref64 {scalar_rel_diff(r_terms[ref_name], f):.1e}")
    rows = gradient_rows(s_ours.adam_m, rec32.snapshot().adam_m, rec64.snapshot().adam_m)
  print(format_gradient_rows(rows, top))
  return rows


def run_resync(args, seed: int) -> list[dict[str, tuple[float, float]]]:
  """The step function alone, without the trajectory's float32 chaos: before each
  step ours is re-initialised from the reference's current float32
  weights (parameters, BN statistics, centers; our optimizer state starts afresh)
  and that step's loss terms are compared; terms computed after an update inside
  the step are left out. With the float64 floor the reference in float64 steps
  from the same float32 weights, so each term's allowance is the reference's own
  float32 error at that very state. One model in memory at a time (the weights go
  through disk). Per step {term: (ours vs ref, the reference's own error or nan)}."""
  args.seed = seed
  ref = build_reference(args)
  print(f"reference: {ref.description}; seed {seed}; resync: every step from the "
        "reference's current weights" + ("; float64 from the same weights"
                                         if args.float64_floor else ""))
  batches = _batches_for(args, ref, seed)
  ours = _our_side(ref)
  skip = set(getattr(ref, "post_update_terms", ()))
  term_map = {o: r for o, r in ref.term_map.items() if r not in skip}
  with tempfile.TemporaryDirectory(prefix="parity_resync_") as tmp:
    folders = [os.path.join(tmp, f"w{i}") for i in range(len(batches))]
    r_terms = []
    for folder, batch in zip(folders, batches):
      RecordedSide._save(folder, ref.initial_weights())  # pylint: disable=protected-access
      r_terms.append(ref.step(batch))
    del ref
    gc.collect()
    f_terms = [None] * len(batches)
    if args.float64_floor:
      ref64 = build_reference(args, "float64")
      for i, (folder, batch) in enumerate(zip(folders, batches)):
        ref64.load_weights(RecordedSide._load(folder))  # pylint: disable=protected-access
        f_terms[i] = ref64.step(batch)
      del ref64
      gc.collect()
    rows = []
    for i, (folder, batch) in enumerate(zip(folders, batches), 1):
      ours.state = None
      gc.collect()
      ours.init_from(RecordedSide._load(folder), batch)  # pylint: disable=protected-access
      o_terms, r, f = ours.step(batch), r_terms[i - 1], f_terms[i - 1]
      row = {name: (scalar_rel_diff(o_terms[o], r[name]),
                    scalar_rel_diff(r[name], f[name]) if f else math.nan)
             for o, name in term_map.items() if o in o_terms and name in r}
      rows.append(row)
      print(f"step {i}: " + "  ".join(
          f"{k} {a:.1e}" + ("" if math.isnan(b) else f" (own {b:.1e})")
          for k, (a, b) in row.items()))
  return rows


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    seeds = [int(s) for s in args.seeds] or [args.seed]
  except ValueError:
    print(f"error: --seeds {','.join(args.seeds)}: expected integers, e.g. 0,1,2",
          file=sys.stderr)
    return 2
  if args.grads_only:
    for seed in seeds:
      run_grads(args, seed, args.grads_top or 20)
    return 0
  if args.resync:
    ok, line = resync_verdict([run_resync(args, seed) for seed in seeds], args.tol)
    print(line)
    return 0 if ok else 1
  bn_group = "bn_stats_unbiased" if "bn_unbiased" in args.align.split(",") else "bn_stats"
  runs, step1_floor = [], False
  for seed in seeds:
    reports, step1_floor = run_seed(args, seed)
    runs.append(reports)
    if len(seeds) > 1:
      print(f"seed {seed} alone: " + verdict(runs[-1], args.tol, bn_group=bn_group,
                                             step1_floor=step1_floor)[1])
      print()
  ok, text = verdict_seeds(runs, args.tol, bn_group=bn_group, step1_floor=step1_floor)
  print(text)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
