"""Tests for privreid_jax.paths: where an output path can be created."""

import os

from privreid_jax import paths


def test_existing_ancestor_walks_up_to_what_exists(tmp_path):
  assert paths.existing_ancestor(str(tmp_path / "a" / "b")) == str(tmp_path)
  (tmp_path / "a").mkdir()
  assert paths.existing_ancestor(str(tmp_path / "a" / "b" / "c")) == str(tmp_path / "a")
  assert paths.existing_ancestor(str(tmp_path / "a")) == str(tmp_path / "a")


def test_a_file_in_the_way_is_named_and_folders_are_not(tmp_path):
  blocker = tmp_path / "f"
  blocker.write_text("x")
  assert paths.file_in_the_way(str(blocker / "out" / "x.npz")) == str(blocker)
  assert paths.file_in_the_way(str(blocker / "x.npz")) == str(blocker)
  assert paths.file_in_the_way(str(tmp_path / "new" / "x.npz")) is None
  assert paths.file_in_the_way(str(blocker)) is None     # the path itself may be a file
  assert paths.file_in_the_way(os.path.relpath(str(tmp_path / "new"))) is None
