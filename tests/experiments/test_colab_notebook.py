"""experiments/colab_demo.ipynb runs top to bottom at the tiny scale and makes its figures.

No jupyter: the .ipynb JSON is read, its code cells are executed in order in one
namespace (matplotlib's Agg backend), with the parameter cell followed by the
tiny settings. Shell and magic lines (`!`, `%`) are dropped; the install cell
is plain Python and skips itself inside this checkout.
"""

import json
import os
import warnings

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(REPO, "experiments", "colab_demo.ipynb")
FIGURES = ("dataset", "anon_grid", "ranking", "dual_grid", "epsilon_curve")


def code_cells(path: str) -> list[tuple[list[str], str]]:
  """(tags, source without shell/magic lines) of each code cell, in order."""
  with open(path) as f:
    nb = json.load(f)
  cells = []
  for cell in nb["cells"]:
    if cell["cell_type"] != "code":
      continue
    lines = "".join(cell["source"]).splitlines()
    kept = [ln for ln in lines if not ln.lstrip().startswith(("!", "%"))]
    cells.append((cell.get("metadata", {}).get("tags", []), "\n".join(kept)))
  return cells


def tiny_settings(workdir) -> str:
  return (f"TINY = True\nWORKDIR = {str(workdir)!r}\nANON_EPOCHS = 1\nDUAL_EPOCHS = 2\n"
          "TOP_K = 3\nNUM_SHOWN = 4\n")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("colab_demo")
  cells = code_cells(NOTEBOOK)
  namespace = {"__name__": "__colab_demo__"}
  cwd = os.getcwd()
  try:
    os.chdir(REPO)
    with warnings.catch_warnings():   # plt.show() under Agg warns that it shows nothing
      warnings.filterwarnings("ignore", "FigureCanvasAgg is non-interactive")
      for k, (tags, source) in enumerate(cells):
        code = compile(source, f"{NOTEBOOK}:code cell {k}", "exec")
        exec(code, namespace)  # pylint: disable=exec-used
        if "parameters" in tags:
          exec(tiny_settings(workdir), namespace)  # pylint: disable=exec-used
  finally:
    os.chdir(cwd)
    import matplotlib.pyplot as plt
    plt.close("all")
  return str(workdir), namespace


def test_notebook_has_one_parameter_cell_first_with_the_scale_knobs():
  cells = code_cells(NOTEBOOK)
  tagged = [k for k, (tags, _) in enumerate(cells) if "parameters" in tags]
  assert tagged == [0]
  source = cells[0][1]
  for name in ("TINY = False", "WORKDIR =", "ANON_EPOCHS =", "DUAL_EPOCHS =", "REPO_URL ="):
    assert name in source, name


def test_outside_a_checkout_without_repo_url_it_stops_in_one_line(tmp_path, monkeypatch):
  cells = [source for _, source in code_cells(NOTEBOOK)]
  install = next(source for source in cells if "def find_checkout" in source)
  monkeypatch.chdir(tmp_path)        # no checkout in or above it, none in ./privreid_jax
  for url in ("", "https://github.com/YOUR-ACCOUNT/privreid_jax.git"):
    namespace = {"__name__": "__colab_demo__", "REPO_URL": url}
    with pytest.raises(SystemExit) as e:
      exec(compile(install, "install cell", "exec"), namespace)  # pylint: disable=exec-used
    message = str(e.value)
    assert "set REPO_URL" in message and "\n" not in message, message
  assert not os.path.exists(tmp_path / "privreid_jax")


def test_notebook_saves_every_promised_figure(executed):
  workdir, ns = executed
  assert set(ns["SAVED"]) == set(FIGURES)
  for name in FIGURES:
    path = os.path.join(workdir, "figures", name + ".png")
    assert ns["SAVED"][name] == path
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    assert os.path.getsize(path) > 2000, name


def test_notebook_trains_both_methods_in_the_workdir(executed):
  workdir, ns = executed
  assert ns["TINY"] is True and ns["anon_config"].data.height == 32   # the tiny override won
  assert {"O->O", "P->P", "R->O", "image_quality"} <= set(ns["anon_results"])
  assert {"O->O", "dp:eps=inf", "dp:eps=100"} <= set(ns["dual_results"])
  for run in ("anon", "dual"):
    assert os.path.isfile(os.path.join(workdir, run, "eval_metrics.jsonl")), run
  assert sorted(os.listdir(os.path.join(workdir, "photos_recovered"))) == \
      sorted(os.listdir(os.path.join(workdir, "photos")))


def test_grids_show_distinct_original_anonymized_and_recovered_images(executed):
  _, ns = executed
  original, anonymized = ns["original"], ns["anonymized"]
  assert original.shape == anonymized.shape == ns["recovered"].shape == (4, 32, 16, 3)
  assert 0.0 <= anonymized.min() and anonymized.max() <= 1.0
  assert not np.allclose(original, anonymized)
  assert not np.allclose(original, ns["desensitized"])


def test_ranking_marks_matches_by_identity(executed):
  _, ns = executed
  assert set(ns["RANKINGS"]) == {"O->O", "P->P"}
  splits, q = ns["splits"], ns["QUERY_INDEX"]
  for setting, kind in (("O->O", "raw"), ("P->P", "anon")):
    top, correct = ns["ranking"](kind, q, 3)
    assert len(top) == 3
    np.testing.assert_array_equal(correct, ns["RANKINGS"][setting])
    g_pids = np.asarray(splits.gallery.pids)[top]
    g_cams = np.asarray(splits.gallery.camids)[top]
    np.testing.assert_array_equal(correct, g_pids == splits.query.pids[q])
    assert np.all(g_pids >= 0)   # junk is never ranked
    assert not np.any((g_pids == splits.query.pids[q]) & (g_cams == splits.query.camids[q]))


def test_epsilon_curve_is_the_dp_rows_of_the_last_evaluation(executed):
  _, ns = executed
  curve = ns["EPSILON_CURVE"]
  assert [e for e, _, _ in curve] == [100.0, float("inf")]
  clean = ns["dual_results"]["dp:eps=inf"]
  assert curve[-1][1:] == pytest.approx((clean["rank1"], clean["mAP"]))
