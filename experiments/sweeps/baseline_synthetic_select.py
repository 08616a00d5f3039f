"""Command 1's schedule, chosen on validation identities: epochs and learning rate.

  python -m experiments.ablate --root /tmp/schedule_select \
      --sweep experiments/sweeps/baseline_synthetic_select.py
  python -m experiments.report --root /tmp/schedule_select

Command 1 (`configs/synthetic.py`) should finish in under 10 minutes on any 2-core
CPU; on the 2-core AMD EPYC it took 11m25s at 5355f0c (the loop at 63 img/s), and
its 14 epochs were set in early sessions by looking at test results. These runs
hold out 20% of the training identities (`_protocol.SELECT`, the same ids as every
table) and read no test split. Each schedule keeps the config's shape: warm-up 2
epochs, the learning rate divided by 10 four and two epochs before the end.

The first round's rule, fixed before its runs: the fewest epochs whose val Rank-1
and val mAP at the end are both within 1.0 point of the 14-epoch schedule's (means
over the seeds run for both); otherwise 14 stays. The second round (below) adds
higher learning rates and chose 12 epochs at 1e-3; the third scores every
checkpoint of both rounds again on new people drawn with the test split's
protocol (`data.val_people_seed`, `experiments/rescore_val.py`), a validation split
as hard as the test split, and by the second round's rule returned command 1 to
14 epochs at 7e-4. The fourth (`:size`) keeps that schedule and reads the same
128x64 images at smaller sizes, scored the third round's way. The fifth (`:width`)
chooses the network's width, under the new-people protocol. `:tiny` runs a grid on
the `tiny` variant (`:size,tiny` the fourth round's, `:width,tiny` the fifth's).
"""

from experiments.sweeps import _protocol

CONFIG = "configs/synthetic.py"
EPOCHS = (14, 12, 10)     # the current schedule first
SEEDS = (0, 1)
FIRST_LR = 7e-4          # configs/synthetic.py's lr during the first round
LRS = (1e-3, 1.4e-3)      # second round, with SHORT epochs
SHORT = (12, 10)
VAL_PEOPLE_SEEDS = (7, 8)  # third round: new people, the test split's protocol
SIZES = ((112, 56), (96, 48))  # fourth round: read sizes below 128x64 (pad-crop margin 4)
WIDTHS = (16, 24, 32)     # fifth round: the ResNet-18's first-stage width (the config's last)


def read_at(height: int, width: int, pad: int) -> dict:
  """Overrides reading the synthetic images at height x width, pad-crop margin `pad`."""
  return {"data.height": height, "data.width": width, "data.pad": pad}


# The read size of rounds 1-3 (the config's until the fourth round chose 112x56).
AT_128X64 = read_at(128, 64, 5)
# Results (2026-12-02, at 6198cc9 / 8131520, 2-core AMD EPYC, alone; val 40 ids, 177
# queries: one query is 0.56 points; val Rank-1 / mAP / mINP at the end, wall time):
#   seed 0: e14 98.9 / 97.6 / 94.6 (536 s); e12 97.2 / 96.5 / 92.7 (427 s);
#           e10 96.6 / 96.5 / 92.4 (333 s)
#   seed 1: e14 98.3 / 98.1 / 96.1 (446 s); e12 97.7 / 97.8 / 94.4 (364 s);
#           e10 96.6 / 96.0 / 90.6 (324 s)
# Means over both seeds against e14's (98.59 / 97.85): e12 Rank-1 -1.13, mAP -0.74; e10
# Rank-1 -1.98, mAP -1.57. Neither is within 1.0 point in both, so by the rule 14 stays.
# The val rows sit near the ceiling: e12 found 3 + 1 fewer first matches than e14 (of
# 177 per seed); 3 fewer in all would have passed the rule.
#
# Second round (2026-12-02, rule fixed before these runs): the shorter schedules
# at a higher learning rate, LRS x (12, 10) epochs x both seeds. Rule: of those
# whose val Rank-1 and val mAP means over the seeds are both within 1.0 point of
# the first round's 14 epochs at 7e-4 (98.59 / 97.85), the fewest epochs, then
# the higher mean val mAP; if none, command 1 keeps 14 epochs at 7e-4.
# Results (at 76470d0, the same machine, alone; val Rank-1 / mAP / mINP, wall time):
#   seed 0: e12 1e-3 98.9 / 99.4 / 97.7 (276 s); e12 1.4e-3 98.3 / 97.8 / 95.4 (273 s);
#           e10 1e-3 98.3 / 97.9 / 95.4 (234 s); e10 1.4e-3 96.0 / 97.0 / 94.0 (260 s)
#   seed 1: e12 1e-3 98.3 / 98.1 / 94.2 (257 s); e12 1.4e-3 98.3 / 98.3 / 94.5 (244 s);
#           e10 1e-3 96.0 / 97.2 / 92.1 (203 s); e10 1.4e-3 97.7 / 97.9 / 93.1 (219 s)
# Means against 98.59 / 97.85: e12 1e-3 98.59 / 98.78 (+0.00 / +0.93), e12 1.4e-3
# 98.31 / 98.03 (-0.28 / +0.18), e10 1e-3 97.18 / 97.57 (-1.41 / -0.28), e10 1.4e-3
# 96.89 / 97.48 (-1.69 / -0.37). Both 12-epoch rows pass, no 10-epoch row does: by the
# rule **12 epochs at 1e-3**, now configs/synthetic.py's schedule (milestones 8, 10).
# The machine ran 1.4-1.5x faster than in the first round's hour (e12 at 7e-4: 427 s, 364 s).
#
# Third round: the same checkpoints on a harder validation split (2026-12-02; rule and
# seeds fixed before any of these scores). The 40 held-out identities score 95-99%
# Rank-1 with every schedule, yet on the test split (seeds 0-2, 160 training ids) 12
# epochs at 1e-3 trailed 14 at 7e-4 by 1.9 Rank-1 / 1.6 mAP: held-out identities rarely
# bring their group of look-alikes along. New people drawn with the test split's
# protocol (`data.val_people_seed`) are as hard as the test split: the baseline
# table's six checkpoints scored on new people from seeds 2 and 3 (no choice rests on
# these) put 14 epochs at 7e-4 above 12 at 1e-3 for every training seed, as the
# test split did. So every checkpoint of the two rounds above (14 runs) is scored anew
# on new people from VAL_PEOPLE_SEEDS (`python -m experiments.rescore_val --root ROOT
# --val_people_seed S`, for each S), no test split read. Rule: the second round's,
# over every setting of both rounds, on the means over both training seeds and both
# people seeds: of the settings whose val Rank-1 and val mAP are both within 1.0 point
# of 14 epochs at 7e-4, the fewest epochs, then the higher val mAP; 14 at 7e-4 itself
# if no other passes.
# Results (at ec76c58, the same machine; val Rank-1 / mAP / mINP on new people from
# seed 7 | seed 8, each from one run's checkpoint; 586 queries per people seed):
#   e14 7e-4:   s0 84.1 / 82.0 / 68.2 | 79.0 / 77.7 / 62.9; s1 84.1 / 82.1 / 67.6 | 81.1 / 79.0 / 64.0
#   e12 7e-4:   s0 81.5 / 80.2 / 65.6 | 76.6 / 75.9 / 61.0; s1 82.2 / 78.2 / 62.2 | 79.3 / 76.2 / 59.3
#   e10 7e-4:   s0 77.7 / 75.2 / 58.0 | 73.4 / 72.2 / 55.1; s1 78.6 / 73.7 / 55.5 | 76.2 / 72.9 / 54.4
#   e12 1e-3:   s0 84.6 / 80.8 / 66.9 | 75.9 / 76.0 / 62.7; s1 80.7 / 78.4 / 63.2 | 78.0 / 76.9 / 61.3
#   e12 1.4e-3: s0 75.6 / 75.1 / 61.3 | 71.3 / 71.7 / 57.4; s1 79.4 / 76.8 / 62.1 | 76.2 / 74.8 / 58.4
#   e10 1e-3:   s0 79.3 / 76.9 / 61.4 | 76.6 / 74.8 / 59.2; s1 77.9 / 74.4 / 56.1 | 77.0 / 74.0 / 56.7
#   e10 1.4e-3: s0 75.1 / 74.0 / 59.3 | 70.8 / 70.5 / 54.7; s1 79.3 / 75.5 / 60.2 | 78.3 / 75.4 / 57.2
# Means against e14 7e-4's 82.06 / 80.17: e12 1e-3 79.80 / 78.06 (-2.26 / -2.11), e12
# 7e-4 79.90 / 77.63 (-2.17 / -2.54), e10 1e-3 -4.37 / -5.14, e10 7e-4 -5.59 / -6.66,
# e12 1.4e-3 -6.41 / -5.57, e10 1.4e-3 -6.18 / -6.34. None within 1.0 point: by the rule
# **14 epochs at 7e-4**, configs/synthetic.py's schedule again (the second round's
# choice, 12 at 1e-3, is undone). `python -m experiments.rescore_val --root
# /tmp/s11/sched --val_people_seed 7` (then 8): 12m27s for the 28 scores, alone.
#
# Fourth round (`:size`; 2026-12-02, rule and seeds fixed before its runs). 14 epochs at
# 7e-4 still left command 1 above 10 minutes in the EPYC's slow hours (11m18s, the steps
# at ~69 img/s), and no shorter schedule kept its quality. A smaller input costs fewer
# FLOPs per image (112x56: 0.77x, 96x48: 0.56x of 128x64's): the same rendered 128x64
# images read at SIZES (the pad-crop margin scaled to 4 px), 14 epochs at 7e-4, both
# training seeds, held-out ids as in rounds 1-2, each final checkpoint scored on new
# people from VAL_PEOPLE_SEEDS as in round 3. Rule: the third round's, against 14 epochs
# at 7e-4 read at 128x64 (that round's 82.06 / 80.17, the same code and machine type):
# of the sizes whose mean val Rank-1 and mean val mAP (both training seeds, both people
# seeds) are both within 1.0 point of it, the smallest; 128x64 stays if none passes.
# Results (at 0f76477, the same machine, alone; held-out val Rank-1 / mAP at the end, wall
# time; then val Rank-1 / mAP / mINP on new people from seed 7 | seed 8):
#   112x56: s0 100.0 / 98.9 (369 s); 83.8 / 82.3 / 69.2 | 78.3 / 78.2 / 63.8
#           s1  99.4 / 98.3 (276 s); 84.5 / 80.6 / 66.0 | 78.5 / 78.1 / 63.4
#   96x48:  s0  99.4 / 98.7 (265 s); 81.5 / 79.5 / 66.6 | 78.2 / 76.4 / 61.0
#           s1  98.3 / 97.7 (197 s); 79.4 / 77.9 / 62.4 | 79.6 / 76.4 / 60.4
# The rule's premise failed: this round ran on a 2-core AMD EPYC *with AVX-512* (Zen 4),
# not the AVX2 EPYC of rounds 1-3, and the 128x64 reference does not reproduce across the
# two (other vector units round the sums differently): e14_s0 and e14_s1 re-run here (same
# commit as this round's runs, the same overrides; held-out val 97.7 / 97.6 and 98.9 / 98.1
# against the AVX2 EPYC's 98.9 / 97.6 and 98.3 / 98.1) score on new people
#   128x64: s0 82.9 / 80.9 / 67.5 | 77.4 / 77.0 / 63.0
#           s1 83.4 / 80.5 / 66.4 | 78.5 / 77.9 / 63.1
# mean 80.55 / 79.06, against the AVX2 EPYC's 82.06 / 80.17. The rule applied against this
# machine's reference (same machine, same code): 112x56 81.26 / 79.79 (+0.72 / +0.73), 96x48
# 79.69 / 77.53 (-0.86 / -1.53, mAP outside 1.0). Against the AVX2 numbers (what the rule
# named): 112x56 -0.80 / -0.38, 96x48 -2.37 / -2.64. Either way **112x56** (pad 4), now
# configs/synthetic.py's read size.
#
# Fifth round (`:width`; 2026-12-03, rule, candidates and seeds fixed here before its runs).
# Command 1's network width (32 channels in the ResNet-18's first stage) was set in early
# sessions by looking at test results, and rounds 1-4 kept it. This round chooses it on
# validation only, under the new-people protocol (`_protocol.select(people=True)`: every
# training identity trains, as in command 1; validation on new people from
# `_protocol.VAL_PEOPLE_SEED`; no test split read), command 1's config otherwise (14 epochs
# at 7e-4, read at 112x56), seeds 0 and 1, widths WIDTHS. Wider is not a candidate: 48
# costs ~2.2x the FLOPs of 32, which would take command 1 well past 10 minutes on the
# slower 2-core machines (issue 20). Rule: the smallest width whose mean val Rank-1 and
# mean val mAP (both seeds) are both within 1.0 point of the best candidate's.
#
# Result (2026-12-03, a 2-core Intel Xeon with AVX-512, alone but for code edits; kept in
# experiments/results/base_width_select; 579 val queries, one query 0.17 points), val
# Rank-1 / mAP per seed and the means:
#   16: s0 75.8 / 71.9, s1 76.9 / 73.9 -> 76.34 / 72.91
#   24: s0 85.7 / 82.7, s1 89.3 / 85.5 -> 87.48 / 84.10
#   32: s0 88.6 / 85.7, s1 86.2 / 85.1 -> 87.39 / 85.39
# The best mean Rank-1 is 24's and the best mean mAP 32's; "the best candidate's" read per
# metric (the rule names no single ranking), 24's mAP is 1.29 below the best: outside.
# 32 is within both (Rank-1 0.09 below): **32 kept** (`CHOSEN_WIDTH`, what `choose_width`
# gives on the kept runs). 16 is 11 points below. The same machine type would repeat these
# digits; another CPU rounds differently (an AVX-512 EPYC gave seed 0 81.0 / 76.6,
# 87.7 / 83.3 and 86.7 / 85.7 before that session ended: the same order).
CHOSEN_WIDTH = 32
RULE_MARGIN = 1.0   # points, the fifth round's rule


def choose_width(means: dict[int, tuple[float, float]]) -> int:
  """The fifth round's rule on {width: (mean val Rank-1, mean val mAP)} in points."""
  best = [max(m[i] for m in means.values()) for i in (0, 1)]
  return min(w for w, m in means.items()
             if all(best[i] - m[i] <= RULE_MARGIN for i in (0, 1)))


def schedule(epochs: int) -> dict:
  return {"optim.epochs": epochs, "optim.warmup_epochs": 2,
          "optim.milestones": (epochs - 4, epochs - 2), "eval.every_epochs": epochs,
          "checkpoint.every_epochs": epochs}


def _row(name: str, config: str, epochs: int, lr: float, seed: int, size: dict) -> dict:
  return {"name": name, "config": config,
          "overrides": _protocol.select({**schedule(epochs), "optim.lr": lr, "seed": seed,
                                         **size})}


def get_sweep(arg=None):
  names = _protocol.sweep_args(arg, ("size", "width", "tiny"), "baseline_synthetic_select.py")
  config = f"{CONFIG}:tiny" if "tiny" in names else CONFIG
  if "width" in names:
    return [{"name": f"w{width}_s{seed}", "config": config,
             "overrides": _protocol.select({"model.width": width, "seed": seed}, people=True)}
            for seed in SEEDS for width in WIDTHS]
  if "size" in names:
    return [_row(f"e14_{h}x{w}_s{seed}", config, 14, FIRST_LR, seed, read_at(h, w, 4))
            for seed in SEEDS for h, w in SIZES]
  first = [_row(f"e{epochs}_s{seed}", config, epochs, FIRST_LR, seed, AT_128X64)
           for seed in SEEDS for epochs in EPOCHS]
  second = [_row(f"e{epochs}_lr{round(lr * 1e4)}e-4_s{seed}", config, epochs, lr, seed,
                 AT_128X64)
            for seed in SEEDS for epochs in SHORT for lr in LRS]
  return first + second
