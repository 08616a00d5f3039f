"""The report: last-evaluation selection, the papers' tables, CSV columns, curves, plots.

Every run folder is written by the test (eval_metrics.jsonl rows in the
trainer's format, run.json as the sweep runner writes it); nothing is trained.
"""

import csv
import json
import sys

import pytest

from experiments import ablate_status, report, report_runs, report_tables

BASE = [  # (step, setting, metrics) of a baseline run
    (10, "O->O", {"rank1": 0.5, "mAP": 0.3, "mINP": 0.1}),
    (20, "O->O", {"rank1": 0.61, "mAP": 0.42, "mINP": 0.2}),
    (20, "O->O", {"rank1": 0.62, "mAP": 0.43, "mINP": 0.2}),   # repeated step: later wins
]
ANON = [
    (5, "O->P", {"rank1": 0.10, "mAP": 0.05}),
    (40, "O->O", {"rank1": 0.874, "mAP": 0.71}),
    (40, "O->P", {"rank1": 0.753, "mAP": 0.6}),
    (40, "P->O", {"rank1": 0.709, "mAP": 0.5}),
    (40, "P->P", {"rank1": 0.643, "mAP": 0.4}),
    (40, "image_quality", {"psnr_M": 20.5, "psnr_P": 21.25, "ssim_M": 0.5, "ssim_P": 0.55}),
]
DUAL = [
    (30, "O->O", {"rank1": 0.9, "mAP": 0.8, "mINP": 0.6}),
    (30, "id_probe:clean", {"id_acc": 0.95, "chance": 0.01, "num_images": 100.0}),
    (30, "id_probe:recon", {"id_acc": 0.052, "chance": 0.01, "num_images": 100.0}),
    (30, "attack:inversion", {"accuracy": 0.2, "loss": 3.0, "probe_acc": 0.1,
                              "psnr_input": 15.5}),
    (30, "recon:quality", {"psnr_input": 17.25, "ssim_input": 0.4}),
    (30, "dp:eps=inf", {"rank1": 0.9, "mAP": 0.8, "rank1_std": 0.0, "mAP_std": 0.0,
                        "sigma": 0.0}),
    (30, "dp:eps=100", {"rank1": 0.8, "mAP": 0.7, "rank1_std": 0.01, "mAP_std": 0.01,
                        "sigma": 0.1, "eps_identity": 400.0}),
    (30, "dp:eps=10", {"rank1": 0.5, "mAP": 0.4, "rank1_std": 0.013, "mAP_std": 0.02,
                       "sigma": 0.9, "eps_identity": 40.5}),
    (15, "dp:eps=10", {"rank1": 0.01, "mAP": 0.01, "rank1_std": 0.0, "mAP_std": 0.0}),
]


def write_run(root, name, rows, index=None):
  workdir = root / name
  workdir.mkdir(parents=True)
  with open(workdir / ablate_status.EVAL_FILE, "w") as f:
    for step, setting, metrics in rows:
      f.write(json.dumps({"step": step, "epoch": step // 10, "setting": setting,
                          **metrics}) + "\n")
  if index is not None:
    ablate_status.write_status(str(workdir), {"name": name, "sweep_index": index, "status": "done"})
  return workdir


@pytest.fixture
def root(tmp_path):
  root = tmp_path / "sweep"
  write_run(root, "zz_base", BASE, index=0)     # sweep order, not name order
  write_run(root, "anon", ANON, index=1)
  write_run(root, "dual", DUAL, index=2)
  return root


def section(md: str, title: str) -> dict[tuple[str, ...], list[str]]:
  """The table under the heading containing `title`: {leading cells: row}."""
  text = next(part for part in md.split("\n## ") if part.startswith(title))
  lines = [ln for ln in text.splitlines() if ln.startswith("|")]
  header = [c.strip() for c in lines[0].strip("|").split("|")]
  rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
  return header, rows


def test_runs_are_found_in_sweep_order_with_last_rows(root):
  runs = report_runs.find_runs(str(root))
  assert [r.name for r in runs] == ["zz_base", "anon", "dual"]
  base = runs[0]
  assert len(base.rows) == 3                    # curves keep every row
  assert base.value("O->O", "rank1") == 0.62    # tables keep the last (max step, last line)
  assert runs[2].last["dp:eps=10"]["step"] == 30


def test_generic_table_has_rank1_and_map_of_the_last_step(root):
  md = report_tables.tables_markdown(report_runs.find_runs(str(root)))
  header, rows = section(md, "All runs")
  assert header == ["run", "setting", "Rank-1", "mAP", "step"]
  assert ["zz_base", "O->O", "62.0", "43.0", "20"] in rows
  assert ["anon", "O->P", "75.3", "60.0", "40"] in rows
  assert ["dual", "O->O", "90.0", "80.0", "30"] in rows
  assert not any(r[1].startswith(("dp:", "image_quality", "id_probe")) for r in rows)
  assert [r[0] for r in rows][0] == "zz_base"


def test_method_a_table_lays_out_the_four_settings_and_image_quality(root):
  header, rows = section(report_tables.tables_markdown(report_runs.find_runs(str(root))),
                         "Method A")
  assert header == ["run", "O->O R1", "O->P R1", "P->O R1", "P->P R1",
                    "PSNR M", "PSNR P", "SSIM M", "SSIM P"]
  assert rows == [["anon", "87.4", "75.3", "70.9", "64.3", "20.50", "21.25", "0.500", "0.550"]]


def test_method_b_table_has_id_and_attacker_accuracy(root):
  header, rows = section(report_tables.tables_markdown(report_runs.find_runs(str(root))),
                         "Method B:")
  assert header == ["run", "Rank-1", "mAP", "mINP", "ID acc (clean)", "ID acc (recon)",
                    "attack (inversion)", "attack (inversion) probe_acc",
                    "decoder (quality) psnr_input", "decoder (quality) ssim_input",
                    "attack (inversion) psnr_input"]
  assert rows == [["dual", "90.0", "80.0", "60.0", "95.0", "5.2", "20.0", "10.0", "17.25",
                   "0.400", "15.50"]]


def test_epsilon_table_is_ordered_by_epsilon_with_noise_spread(root):
  header, rows = section(report_tables.tables_markdown(report_runs.find_runs(str(root))),
                         "Method B stage 2")
  assert header[:2] == ["run", "epsilon (image)"]
  assert [r[1] for r in rows] == ["10", "100", "inf"]
  assert rows[0][2:] == ["40.5", "–", "0.9", "50.0 ± 1.3", "40.0 ± 2.0"]   # step 30, not 15
  assert rows[2][5:] == ["90.0", "80.0"]


def _seeded_dual(seed, r1, link_r1):
  return [(30, "O->O", {"rank1": r1, "mAP": 0.5, "mINP": 0.2}),
          (30, "id_probe:recon", {"id_acc": 0.1, "chance": 0.01}),
          (30, "dp:eps=inf", {"rank1": r1, "mAP": 0.5, "sigma": 0.0}),
          (30, "dp:eps=10", {"rank1": r1 / 2, "mAP": 0.2, "sigma": 0.9, "eps_identity": 40.0,
                             "eps_identity_median": 20.0}),
          (30, "attack:linkage@eps=inf", {"rank1": r1, "mAP": 0.5, "classifier_acc": 0.9,
                                          "chance": 0.02}),
          (30, "attack:linkage@eps=10", {"rank1": link_r1, "mAP": 0.1, "classifier_acc": 0.3,
                                         "chance": 0.02})]


def test_seeds_are_one_row_with_mean_and_std_and_linkage_sits_with_epsilon(tmp_path):
  root = tmp_path / "seeds"
  write_run(root, "twostage_s0", _seeded_dual(0, 0.6, 0.2), index=0)
  write_run(root, "twostage_s1", _seeded_dual(1, 0.8, 0.4), index=1)
  md = report_tables.tables_markdown(report_runs.find_runs(str(root)))
  header, rows = section(md, "Method B stage 2")
  assert [r[:2] for r in rows] == [["twostage (2 seeds)", "10"], ["twostage (2 seeds)", "inf"]]
  by = dict(zip(header, rows[0]))
  assert by["epsilon (identity, largest k)"] == "40"
  assert by["epsilon (identity, median k)"] == "20"
  assert by["Rank-1"] == "35.0 ± 5.0"                      # (30, 40): mean ± population std
  assert by["attack: linkage Rank-1"] == "30.0 ± 10.0"
  assert by["attack: classifier on released"] == "30.0"
  header, rows = section(md, "Method B:")
  assert [r[0] for r in rows] == ["twostage (2 seeds)"]
  assert rows[0][1] == "70.0 ± 10.0"
  assert not any("linkage" in h for h in header)


def test_a_runs_stage_folders_are_not_runs_of_their_own(tmp_path):
  root = tmp_path / "staged"
  write_run(root, "full_mosaic_s0", ANON, index=0)
  write_run(root / "full_mosaic_s0", "stage_1", ANON)       # the staged driver's stage runs
  assert [r.name for r in report_runs.find_runs(str(root))] == ["full_mosaic_s0"]


def test_a_staged_run_still_training_is_not_reported_through_its_stage_folder(tmp_path):
  root = tmp_path / "staged"
  write_run(root, "wo_mosaic_s0", ANON, index=0)
  running = root / "full_mosaic_s0"        # run.json written, stage 0 evaluated, no run rows yet
  running.mkdir()
  ablate_status.write_status(str(running), {"name": "full_mosaic_s0", "sweep_index": 1,
                                            "status": "running"})
  write_run(running, "stage_0", [(148, "stage_check", {"rank1": 0.3, "passed": 0.0})])
  assert [r.name for r in report_runs.find_runs(str(root))] == ["wo_mosaic_s0"]


def test_tables_only_for_methods_present(tmp_path):
  write_run(tmp_path / "only", "base", BASE)
  md = report_tables.tables_markdown(report_runs.find_runs(str(tmp_path / "only")))
  assert "## All runs" in md
  assert "Method A" not in md and "Method B" not in md


def test_csv_has_one_row_per_run_and_setting_with_every_metric(root, tmp_path):
  out = tmp_path / "out"
  result = report.write_report(str(root), str(out), plots=False)
  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  columns = list(rows[0])
  assert columns[:4] == ["run", "setting", "step", "epoch"]
  assert columns[4:7] == ["rank1", "mAP", "mINP"]     # the Re-ID metrics first
  for key in ("psnr_P", "ssim_M", "id_acc", "accuracy", "eps_identity", "rank1_std"):
    assert key in columns
  pairs = [(r["run"], r["setting"]) for r in rows]
  assert len(pairs) == len(set(pairs)) == 1 + 5 + 8
  base = next(r for r in rows if r["run"] == "zz_base")
  assert (base["step"], float(base["rank1"]), base["psnr_P"]) == ("20", 0.62, "")
  with open(out / "evaluations.csv") as f:
    assert len(list(csv.DictReader(f))) == len(BASE) + len(ANON) + len(DUAL)
  assert (out / "tables.md").read_text() == report_tables.tables_markdown(result["runs"])


def test_training_scalars_are_read_from_tensorboard(root, tmp_path):
  from tensorboardX import SummaryWriter
  for i, losses in enumerate(([3.0, 2.5], [2.0])):   # a resumed run writes a second file
    w = SummaryWriter(str(root / "zz_base" / "tensorboard"), filename_suffix=f".{i}")
    for step, loss in enumerate(losses, 1 + i):
      w.add_scalar("loss", loss, step)
    w.add_scalar("eval/O_to_O/rank1", 0.5, 2)
    w.close()
  scalars = report_runs.read_tb_scalars(str(root / "zz_base" / "tensorboard"))
  assert scalars["loss"] == [(1, 3.0), (2, 2.0)]     # the later file wins step 2
  report.write_report(str(root), str(tmp_path / "out"), plots=False)
  with open(tmp_path / "out" / "train_scalars.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["run"], r["tag"], r["step"], float(r["value"])) for r in rows] == [
      ("zz_base", "loss", "1", 3.0), ("zz_base", "loss", "2", 2.0)]


def test_plots_are_optional_without_matplotlib(root, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
  result = report.write_report(str(root), str(tmp_path / "out"))
  assert "matplotlib is not installed" in result["plots_skipped"]
  assert not list((tmp_path / "out").glob("*.png"))
  assert (tmp_path / "out" / "tables.md").exists()


def test_plots_are_written_with_matplotlib(root, tmp_path):
  pytest.importorskip("matplotlib")
  result = report.write_report(str(root), str(tmp_path / "out"))
  assert result["plots_skipped"] is None
  for name in ("privacy_utility.png", "epsilon_curve.png", "training_curves.png"):
    assert (tmp_path / "out" / name).stat().st_size > 1000


def test_bad_inputs_fail_with_one_line(tmp_path, capsys):
  assert report.main(["--root", str(tmp_path / "missing")]) == 1
  assert "no folder" in capsys.readouterr().err
  (tmp_path / "empty").mkdir()
  assert report.main(["--root", str(tmp_path / "empty")]) == 1
  assert "no eval_metrics.jsonl" in capsys.readouterr().err
  workdir = write_run(tmp_path / "bad", "r", BASE)
  with open(workdir / ablate_status.EVAL_FILE, "a") as f:
    f.write('{"step": 3, "setting": "O->O"\n')
  assert report.main(["--root", str(tmp_path / "bad"), "--noplots"]) == 1
  err = capsys.readouterr().err
  assert "eval_metrics.jsonl:4: not a JSON line" in err


def test_a_single_workdir_is_one_run(tmp_path, capsys):
  workdir = write_run(tmp_path, "solo", BASE)
  assert report.main(["--root", str(workdir), "--noplots"]) == 0
  assert "| solo | O->O | 62.0 | 43.0 | 20 |" in capsys.readouterr().out
  assert (workdir / "report" / "results.csv").exists()
  assert report.main(["--root", str(workdir), "--plots=false"]) == 0


def test_misspelt_flag_is_one_line_with_exit_2(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    report.main(["--root", str(tmp_path), "--no-plots"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and "no-plots" in err and err.count("\n") == 1, err


def test_seed_table_averages_runs_named_by_seed(tmp_path):
  root = tmp_path / "seeds"
  write_run(root, "bot_s0", [(4, "O->O", {"rank1": 0.5, "mAP": 0.2})])
  write_run(root, "bot_s1", [(4, "O->O", {"rank1": 0.7, "mAP": 0.4})])
  write_run(root, "gem_s0", [(4, "O->O", {"rank1": 0.9, "mAP": 0.9})])   # one seed: no row
  header, rows = section(report_tables.tables_markdown(report_runs.find_runs(str(root))), "Mean")
  assert header == ["runs", "setting", "Rank-1", "mAP", "seeds"]
  assert rows == [["bot", "O->O", "60.0 ± 10.0", "30.0 ± 10.0", "2"]]


def test_dataset_table_has_a_column_per_target_dataset_with_seeds_pooled(tmp_path):
  root = tmp_path / "real"
  for seed, r1 in ((0, 0.30), (1, 0.40)):
    write_run(root, f"bot_s{seed}", [
        (50, "viper/O->O", {"rank1": r1, "mAP": 0.2}),
        (50, "cuhk01/O->O", {"rank1": r1 + 0.2, "mAP": 0.5}),
        (50, "val/O->O", {"rank1": 0.9, "mAP": 0.9}),
        (50, "viper/P->O", {"rank1": 0.1, "mAP": 0.1})], index=seed)
  write_run(root, "other", BASE, index=2)          # no target rows: not in the table
  md = report_tables.tables_markdown(report_runs.find_runs(str(root)))
  header, rows = section(md, "Per dataset")
  assert header == ["runs", "own test split", "viper", "cuhk01"]
  assert rows == [["bot (2 seeds)", "–", "35.0 ± 5.0 / 20.0", "55.0 ± 5.0 / 50.0"]]
  other = report_runs.find_runs(str(tmp_path / "real" / "other"))
  assert report_tables.dataset_table(other) is None


def test_spearman_matches_scipy_with_ties():
  stats = pytest.importorskip("scipy.stats")
  rng = __import__("numpy").random.default_rng(0)
  for n in (4, 7, 12):
    x = rng.integers(0, 4, n).astype(float).tolist()   # many ties
    y = rng.normal(size=n).tolist()
    if len(set(x)) > 1:
      assert report_tables.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
  assert report_tables.spearman([1, 1, 1, 1], [1, 2, 3, 4]) is None


def test_agreement_table_ranks_validation_against_test(tmp_path):
  root = tmp_path / "agree"
  val = [0.2, 0.4, 0.6, 0.8, 0.5]
  test = [0.1, 0.3, 0.5, 0.7, 0.4]      # the same order: rho 1
  maps = [0.9, 0.7, 0.5, 0.3, 0.6]      # test mAP in the opposite order: rho -1
  for i, (v, t, m) in enumerate(zip(val, test, maps)):
    write_run(root, f"r{i}_s0", [(4, "O->O", {"rank1": t, "mAP": m}),
                                 (4, "val/O->O", {"rank1": v, "mAP": v}),
                                 (4, "P->O", {"rank1": t, "mAP": t})])
  write_run(root, "only_three_with_val", [(4, "val/P->P", {"rank1": 0.5, "mAP": 0.5}),
                                          (4, "P->P", {"rank1": 0.5, "mAP": 0.5})])
  header, rows = section(report_tables.tables_markdown(report_runs.find_runs(str(root))),
                         "Validation")
  assert header == ["setting", "Spearman Rank-1", "Spearman mAP", "runs"]
  assert rows == [["O->O", "1.00", "-1.00", "5"]]   # P->O has no val rows; P->P one run
