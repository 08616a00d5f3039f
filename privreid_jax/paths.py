"""Where an output path can be created: the checks every writing tool runs first."""

from __future__ import annotations

import os


def existing_ancestor(path: str) -> str:
  """The nearest existing folder (or file) on the way up from `path` (itself
  when it exists)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path


def file_in_the_way(path: str) -> str | None:
  """The file standing where a folder above `path` must be for `path` to be
  created, else None."""
  above = existing_ancestor(os.path.dirname(os.path.abspath(path)))
  return above if os.path.exists(above) and not os.path.isdir(above) else None
