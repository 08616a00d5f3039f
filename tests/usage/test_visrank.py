"""python -m privreid_jax.visrank: torchreid-style ranked strips."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from privreid_jax import visrank


def test_rank_leaves_out_same_id_same_camera_and_orders_stably():
  # Query 0 (pid 1, cam 0); gallery: same pid same cam (junk), a tie, a true match.
  qf = np.array([[1.0, 0.0]], np.float32)
  gf = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.9, 0.1], [1.0, 0.05]], np.float32)
  g_pids, g_cams = np.array([1, 2, 3, 1, 4]), np.array([0, 1, 1, 2, 1])
  r, = visrank.rank(qf, gf, np.array([0]), np.array([1]), g_pids, np.array([0]), g_cams,
                    topk=3)
  assert r.gallery == [4, 3, 1] and r.matches == [False, True, False]
  assert r.distances == sorted(r.distances)
  r, = visrank.rank(qf, gf, np.array([0]), np.array([1]), g_pids, np.array([0]), g_cams,
                    topk=10)
  assert r.gallery == [4, 3, 1, 2]                      # ties keep gallery order
  assert visrank.pick_queries(3, 10).tolist() == [0, 4, 9]
  assert visrank.pick_queries(20, 4).tolist() == [0, 1, 2, 3]


def test_strips_for_method_a(runs, tmp_path, capsys):
  out = tmp_path / "vis"
  visrank.main(["prog", f"--checkpoint={runs.anon}", f"--output={out}",
                "--num_queries=2", "--topk=3", "--image_height=32"])
  assert "wrote 4 strips" in capsys.readouterr().out
  index = json.loads((out / "visrank.json").read_text())
  strips = index["strips"]
  assert [s["setting"] for s in strips] == ["O->O", "O->O", "P->P", "P->P"]
  assert sorted(os.listdir(out)) == sorted([s["file"] for s in strips] + ["visrank.json"])
  h, w = 32, 16                                 # the model's 32x16 at image_height 32
  for s in strips:
    q = s["query"]
    img = np.asarray(Image.open(out / s["file"]))
    pair = 2 if s["setting"] == "P->P" else 1    # anonymized beside raw
    cell = pair * w + 2 * visrank.BORDER
    assert img.shape == (h + 2 * visrank.BORDER, cell * 4 + visrank.QUERY_EXTRA_SPACING +
                         2 * visrank.GRID_SPACING, 3)
    assert (img[0, :cell] == visrank.BLACK).all()                    # the query's frame
    x = cell + visrank.QUERY_EXTRA_SPACING
    distances = [g["distance"] for g in s["gallery"]]
    assert distances == sorted(distances) and len(s["gallery"]) == 3
    for g in s["gallery"]:
      assert not (g["pid"] == q["pid"] and g["camid"] == q["camid"])   # protocol junk
      assert g["match"] == (g["pid"] == q["pid"])
      color = visrank.GREEN if g["match"] else visrank.RED
      assert (img[0, x:x + cell] == color).all() and (img[-1, x:x + cell] == color).all()
      x += cell + visrank.GRID_SPACING


def test_baseline_other_settings_and_errors(runs, tmp_path, cli_error, capsys):
  out = tmp_path / "vis"
  visrank.main(["prog", f"--checkpoint={runs.base}", "--config=configs/synthetic.py:tiny",
                f"--config.data.root={runs.root}", "--config.eval.rerank=True",
                f"--output={out}", "--num_queries=1", "--topk=2"])
  index = json.loads((out / "visrank.json").read_text())
  assert index["rerank"] is True and [s["setting"] for s in index["strips"]] == ["O->O"]
  capsys.readouterr()
  main = visrank.main
  ok = [f"--output={tmp_path / 'v2'}"]
  assert "no such folder" in cli_error(main, [f"--checkpoint={tmp_path / 'x'}"] + ok)
  assert "no checkpoint" in cli_error(main, [f"--checkpoint={out}"] + ok)
  assert "setting 'P->P'" in cli_error(main, [f"--checkpoint={runs.base}",
                                              "--settings=P->P"] + ok)
  assert "--topk=0" in cli_error(main, [f"--checkpoint={runs.base}", "--topk=0"] + ok)
  assert "is a file" in cli_error(main, [f"--checkpoint={runs.base}",
                                         f"--output={out / 'visrank.json'}"])
  assert cli_error(main, [f"--checkpoint={runs.base}",
                          f"--output={out / 'visrank.json' / 'x'}"]) == (
      f"error: --output={out / 'visrank.json' / 'x'}: {out / 'visrank.json'} is a file, "
      "not a folder")
  with pytest.raises(SystemExit) as e:
    main(["prog", "--help"])
  assert e.value.code == 0 and "--num_queries" in capsys.readouterr().out
