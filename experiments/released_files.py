"""Method A's rows when the anonymized images are released as files.

  python -m experiments.released_files --run=RUN --outsider=THIRD_PARTY_RUN \
      [--store=float,png_input,jpeg_input,png_model] [--json=OUT.json]

A run's rows O->P, P->O, P->P (the authorized model C) and 3rd:P->O, 3rd:O->P,
3rd:P->P (the outsider: a Re-ID model trained on raw images only) are measured
on P = G(O) held in float. What a user releases is a folder of files written
by `python -m privreid_jax.anonymize`: 8-bit, resized back to each photo's size
by default, JPEG for JPEG photos. This writes the run's test query and gallery
images with the CLI's own code (`anonymize.process_folder`) in each storage
form of `--store`, and scores C and the outsider on those files, read back by
the evaluation loader like any photo:

  float       P in memory, as the run's own evaluation (a check: its rows must
              equal the run's eval_metrics.jsonl)
  png_input   PNG at each photo's size (the CLI's default for PNG photos)
  jpeg_input  JPEG quality 95 at each photo's size (the default for JPEG photos)
  png_model   PNG at the model's size (--size=model --format=png)

The photos are read through symbolic links named .png or .jpg, so only P's
storage differs between the forms. Nothing is chosen on these numbers: the
test split is read to report what a released folder gives, for a run whose
choices were all made on its validation split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile

# --store -> (anonymize --size, --format, the photos' link extension)
FORMS = {"png_input": ("input", "same", ".png"), "jpeg_input": ("input", "same", ".jpg"),
         "png_model": ("model", "png", ".png")}
ROWS = {"O->O": ("O", "O"), "O->P": ("O", "P"), "P->O": ("P", "O"), "P->P": ("P", "P")}


def write_anonymized(anonymizer, photos: list[str], folder: str, size: str, fmt: str,
                     ext: str) -> list[str]:
  """Runs the anonymize CLI's `process_folder` on `photos` (linked into FOLDER/O as
  00000<ext>, 00001<ext>, ...) into FOLDER/P; returns each photo's output file."""
  from privreid_jax import anonymize
  links, out = os.path.join(folder, "O"), os.path.join(folder, "P")
  os.makedirs(links)
  names = [f"{i:06d}{ext}" for i in range(len(photos))]
  for photo, name in zip(photos, names):
    os.symlink(os.path.abspath(photo), os.path.join(links, name))
  anonymize.process_folder(anonymizer, links, out, progress=False, size=size, fmt=fmt)
  return [os.path.join(out, anonymize.output_name(n, fmt)) for n in names]


@contextlib.contextmanager
def named_flag(flag: str, value: str):
  """Errors of loading `value` as the library words them (`--checkpoint=...:`,
  `privreid_jax.load(...):`, `config.evals.outsider.workdir=...:`) re-worded to
  name this tool's flag: `--<flag>=<value>: <reason>`."""
  try:
    yield
  except (FileNotFoundError, ValueError) as e:
    from privreid_jax import api
    reason = re.sub(r"^(--checkpoint=\S+|privreid_jax\.load\(.*?\)|"
                    r"config\.evals\.outsider\.workdir='[^']*'): ", "", api.one_line(e))
    raise type(e)(f"--{flag}={value}: {reason}") from None


def json_error(path: str | None) -> str | None:
  """The one-line error for a --json path that cannot be written (checked before
  the measurement, which can take long), else None."""
  from privreid_jax import cli
  if path and os.path.isdir(path):
    return f"--json={path} is a folder; give a file name"
  return cli.output_parent_error("json", path) if path else None


def write_rows(path: str, rows: list[dict]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(rows, f, indent=1)
    f.write("\n")


def store(anonymizer, split, form: str, folder: str):
  """`split` with each image replaced by its anonymized file, stored as `form`."""
  from privreid_jax.data.records import Record
  files = write_anonymized(anonymizer, [r.path for r in split.source], folder, *FORMS[form])
  records = [Record(f, int(p), int(c)) for f, p, c in zip(files, split.pids, split.camids)]
  return dataclasses.replace(split, source=records)


class Scorer:
  """One model's rows on any query / gallery splits, each split's features computed
  once (as the run's evaluation computes them: ReidEvaluator, the run's eval config)."""

  def __init__(self, method, state, splits, data_cfg, eval_cfg):
    from privreid_jax import sharding
    self.method, self.state, self.splits = method, state, splits
    self.data_cfg, self.eval_cfg, self.mesh = data_cfg, eval_cfg, sharding.make_mesh()
    self._features: dict[tuple[int, str], tuple] = {}

  def features(self, split, kind: str):
    key = (id(split), kind)
    if key not in self._features:     # the split is kept with them: its id stays its own
      from privreid_jax.evaluation.reid import ReidEvaluator
      evaluator = ReidEvaluator(self.method, dataclasses.replace(self.splits, query=split),
                                self.data_cfg, self.eval_cfg, self.mesh)
      self._features[key] = (split, evaluator.features(self.state, "query", kind))
    return self._features[key][1]

  def rows(self, query: dict, gallery: dict, names: tuple[str, ...],
           prefix: str = "") -> dict:
    """{prefix + row: metrics} for `names` of ROWS; query / gallery map "O" and "P"
    to the (split, kind) the row reads on that side."""
    from privreid_jax.evaluation import ranking, reid
    out = {}
    for row in names:
      (q, q_kind), (g, g_kind) = query[ROWS[row][0]], gallery[ROWS[row][1]]
      result = ranking.evaluate_features(
          self.features(q, q_kind), self.features(g, g_kind), q.pids, g.pids, q.camids,
          g.camids, metric=self.eval_cfg.distance, rerank=self.eval_cfg.rerank,
          max_rank=self.eval_cfg.max_rank)
      out[prefix + row] = reid.summarize(result)
    return out


def measure(run: str, outsider: str, forms: list[str], scratch: str) -> list[dict]:
  """The rows of every form (see the module doc)."""
  import privreid_jax
  from privreid_jax import anonymize
  from privreid_jax.methods.anonymization import third_party
  unknown = [f for f in forms if f != "float" and f not in FORMS]
  if unknown:
    raise ValueError(f"--store={unknown[0]}: expected float or {', '.join(FORMS)}")
  from privreid_jax.data import splits as data_splits
  with named_flag("run", run):
    model = privreid_jax.load(run)
    anonymizer = anonymize.Anonymizer(run)
  data_cfg, eval_cfg = model.config.data, model.config.eval
  splits = data_splits.open_splits(data_cfg)      # the run's test query / gallery
  # The outsider as the run's evaluation sees it: our loader and normalisation, then
  # its own (third_party.ThirdParty), so the float rows are the run's "3rd:" rows.
  with named_flag("outsider", outsider):
    tp = third_party.ThirdParty.load(outsider, model.method, data_cfg)
  ours = Scorer(model.method, model.state, splits, data_cfg, eval_cfg)
  theirs = Scorer(tp, (model.state, tp.variables), splits, data_cfg, eval_cfg)
  results = []
  for form in forms:
    query = {"O": (splits.query, "raw")}
    gallery = {"O": (splits.gallery, "raw")}
    if form == "float":                  # P = G(O) inside the model
      query["P"], gallery["P"] = (splits.query, "anon"), (splits.gallery, "anon")
    else:
      base = os.path.join(scratch, form)
      query["P"] = (store(anonymizer, splits.query, form, os.path.join(base, "q")), "raw")
      gallery["P"] = (store(anonymizer, splits.gallery, form, os.path.join(base, "g")),
                      "raw")
    names = tuple(ROWS) if form == "float" else ("O->P", "P->O", "P->P")  # O->O: once
    rows = {**ours.rows(query, gallery, names), **theirs.rows(query, gallery, names, "3rd:")}
    for row, metrics in rows.items():
      results.append({"run": os.path.basename(os.path.normpath(run)), "store": form,
                      "row": row, **metrics})
  return results


def reported_rows(run: str) -> dict:
  """{row: metrics} of the run's last evaluation (eval_metrics.jsonl)."""
  with open(os.path.join(run, "eval_metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  last = max(r["step"] for r in rows)
  return {r["setting"]: r for r in rows if r["step"] == last}


def main(argv=None) -> None:
  from absl import flags
  from privreid_jax import api
  fv = flags.FlagValues()      # its own flags: importing this module defines none
  flags.DEFINE_string("run", None, "A method-A run (learned mode).", flag_values=fv)
  flags.DEFINE_string("outsider", None, "The outsider: a baseline run on raw images "
                      "(the run's config.evals.outsider.workdir).", flag_values=fv)
  flags.DEFINE_list("store", ["float", "png_input", "jpeg_input", "png_model"],
                    "Storage forms of P (module doc).", flag_values=fv)
  flags.DEFINE_string("json", None, "Also write the rows to this JSON file.",
                      flag_values=fv)
  flags.mark_flags_as_required(["run", "outsider"], flag_values=fv)
  api.parse_flags(fv, list(sys.argv if argv is None else argv), __doc__)
  unknown = [f for f in fv.store if f != "float" and f not in FORMS]
  if unknown:
    api.fail(f"--store={unknown[0]}: expected float or {', '.join(FORMS)}", 2)
  if json_error(fv.json):
    api.fail(json_error(fv.json))
  try:
    with tempfile.TemporaryDirectory(prefix="released_files_") as scratch:
      rows = measure(fv.run, fv.outsider, fv.store, scratch)
    reported = reported_rows(fv.run)
  except (FileNotFoundError, ValueError) as e:
    api.fail(api.one_line(e))
  print("| P stored as | row | Rank-1 | mAP | the run's Rank-1 (float P) |")
  print("|---|---|---|---|---|")
  for r in rows:
    ref = reported.get(r["row"], {}).get("rank1")
    print(f"| {r['store']} | {r['row']} | {100 * r['rank1']:.1f} | {100 * r['mAP']:.1f} | "
          f"{'-' if ref is None else f'{100 * ref:.1f}'} |")
  if fv.json:
    write_rows(fv.json, rows)


if __name__ == "__main__":
  main()
