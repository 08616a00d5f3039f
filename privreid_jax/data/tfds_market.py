"""A tensorflow-datasets builder writing any Re-ID folder to ArrayRecord, and its reader.

  python -m privreid_jax.data.tfds_market --name market1501 \
      --root /data/Market-1501-v15.09.15 --data_dir /data/tfds

Splits `train`, `query`, `gallery` as `datasets.load_dataset` parses them (train
pids relabelled, cameras 0-based, pid -1 dropped). Features: `image` (the file's
encoded bytes, stored as-is: decoded once to check it is an image, never
re-encoded; a file that does not decode stops the build naming it), `pid`, `camid`,
`filename`. Works without TensorFlow: the output is ArrayRecord, read back with
random access (`data_source`), never through `tf.data`. The build reads only the
local folder (`manual_dir`), so it needs no network.

One builder config per dataset; CUHK03-NP has one per subset (`cuhk03_labeled`,
`cuhk03_detected`). Output: `<data_dir>/reid_folder/<config>/<version>/`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from privreid_jax import paths
from privreid_jax.data import datasets
from privreid_jax.data import transforms
from privreid_jax.data.records import DatasetError
from privreid_jax.data.records import Record

SPLITS = ("train", "query", "gallery")
_CONFIG_NAMES = ("market1501", "dukemtmcreid", "msmt17", "cuhk03_labeled",
                 "cuhk03_detected", "synthetic")


def config_name(name: str, cuhk03_subset: str = "labeled") -> str:
  """The builder config for dataset `name` ("cuhk03" -> "cuhk03_<subset>")."""
  if name == "cuhk03":
    if cuhk03_subset not in datasets.CUHK03_SUBSETS:
      raise DatasetError(f"cuhk03_subset {cuhk03_subset!r} is not one of "
                         f"{', '.join(datasets.CUHK03_SUBSETS)}")
    name = f"cuhk03_{cuhk03_subset}"
  if name not in _CONFIG_NAMES:
    raise DatasetError(f"unknown dataset name {name!r}; known: "
                       f"{', '.join(datasets.KNOWN_DATASETS)}")
  return name


def _dataset_args(config: str) -> tuple[str, str]:
  """(load_dataset name, cuhk03_subset) of a builder config name."""
  if config.startswith("cuhk03_"):
    return "cuhk03", config[len("cuhk03_"):]
  return config, "labeled"


# Under `python -m`, this file runs as __main__ and hands over to the package's
# copy of itself (see the end), so only that copy registers the builder.
class ReidFolder(tfds.core.GeneratorBasedBuilder,
                 skip_registration=__name__ == "__main__"):
  """Person Re-ID images with identity and camera labels, from a local folder."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in _CONFIG_NAMES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass the dataset folder (or its parent) as the manual dir, e.g. "
      "prepare('market1501', '/data/Market-1501-v15.09.15', data_dir).")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Person re-identification images (raw encoded bytes).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "pid": tfds.features.Scalar(dtype=np.int64),
            "camid": tfds.features.Scalar(dtype=np.int64),
            "filename": tfds.features.Text(),
        }),
        supervised_keys=("image", "pid"),
        # Keep the parser's (sorted) order: examples are keyed by index.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    name, subset = _dataset_args(self.builder_config.name)
    ds = datasets.load_dataset(name, os.fspath(dl_manager.manual_dir),
                               cuhk03_subset=subset)
    return {split: self._generate_examples(getattr(ds, split))
            for split in SPLITS}

  def _generate_examples(self, records: Sequence[Record]
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, r in enumerate(records):
      try:
        with open(r.path, "rb") as f:
          data = f.read()
      except OSError as e:
        raise DatasetError(f"cannot read image {r.path}: {e.strerror}") from None
      transforms.decode_image(data, name=r.path)   # DatasetError naming the file
      yield i, {"image": data, "pid": r.pid, "camid": r.camid,
                "filename": os.path.basename(r.path)}


def prepare(name: str, root: str, data_dir: str, *,
            cuhk03_subset: str = "labeled") -> str:
  """Writes dataset `name` found at `root` as ArrayRecord under `data_dir`.

  Returns the folder holding the prepared version. An already prepared
  dataset is left as it is.
  """
  config = config_name(name, cuhk03_subset)
  data_dir = os.path.abspath(data_dir)
  blocker = paths.existing_ancestor(data_dir)
  if not os.path.isdir(blocker):
    raise DatasetError(f"data_dir {data_dir}: {blocker} is a file, not a folder")
  builder = ReidFolder(config=config, data_dir=data_dir, file_format="array_record")
  if builder.is_prepared():
    return os.fspath(builder.data_dir)
  # Parse first: bad input fails with the parser's one-line error before tfds
  # creates anything.
  root = datasets.load_dataset(name, root, cuhk03_subset=cuhk03_subset).root
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(
          manual_dir=root,
          compute_stats=tfds.download.ComputeStatsMode.SKIP,
          try_download_gcs=False))
  return os.fspath(builder.data_dir)


class ReidSource:
  """Random access to one prepared split: items {image: bytes, pid, camid, filename}."""

  def __init__(self, source: Sequence[Any], description: str):
    self._source = source
    self._description = description

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return _to_item(self._source[index])

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [_to_item(ex) for ex in self._source.__getitems__(indices)]

  def __repr__(self) -> str:
    return f"ReidSource({self._description}, {len(self)} images)"


def _to_item(ex: dict[str, Any]) -> dict[str, Any]:
  filename = ex["filename"]
  return {"image": bytes(ex["image"]), "pid": int(ex["pid"]),
          "camid": int(ex["camid"]),
          "filename": filename.decode() if isinstance(filename, bytes)
                      else str(filename)}


def data_source(data_dir: str, name: str, split: str, *,
                cuhk03_subset: str = "labeled") -> ReidSource:
  """The prepared `split` of dataset `name` under `data_dir` (see `prepare`)."""
  config = config_name(name, cuhk03_subset)
  if split not in SPLITS:
    raise DatasetError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  builder = ReidFolder(config=config, data_dir=data_dir)
  if not builder.is_prepared():
    raise DatasetError(
        f"no prepared {config} dataset at {builder.data_dir}; run python -m "
        f"privreid_jax.data.tfds_market --name {name} --root DIR "
        f"--data_dir {data_dir}")
  source = builder.as_data_source(
      split=split, decoders={"image": tfds.decode.SkipDecoding()})
  return ReidSource(source, f"{config}/{split} at {builder.data_dir}")


def _define(fv):
  """The tool's flags (absl, snake_case) on `fv`."""
  from absl import flags
  flags.DEFINE_string("name", None, f"One of {', '.join(datasets.KNOWN_DATASETS)}.",
                      flag_values=fv)
  flags.DEFINE_string("root", None, "Dataset folder (or its parent).", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "tfds output folder.", flag_values=fv)
  flags.DEFINE_enum("cuhk03_subset", "labeled", list(datasets.CUHK03_SUBSETS),
                    "CUHK03-NP subset.", flag_values=fv)
  for name in ("name", "root", "data_dir"):
    flags.mark_flag_as_required(name, flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Prepares a dataset; argv without the program name (default sys.argv[1:])."""
  from absl import flags
  from privreid_jax import cli
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _define(flags.FlagValues())
  cli.parse_tool_flags(args, ["python -m privreid_jax.data.tfds_market", *argv], __doc__)
  try:
    path = prepare(args.name, args.root, args.data_dir,
                   cuhk03_subset=args.cuhk03_subset)
  except DatasetError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"prepared {path}")
  for split in SPLITS:
    source = data_source(args.data_dir, args.name, split,
                         cuhk03_subset=args.cuhk03_subset)
    print(f"  {source}")
  return 0


if __name__ == "__main__":
  from privreid_jax.data import tfds_market  # pylint: disable=import-self
  sys.exit(tfds_market.main())
