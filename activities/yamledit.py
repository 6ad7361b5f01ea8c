"""Edits of a target's values file, for activities/gitops.py: the one implementation is aicd.yamledit (the
write-path syntax, the exact text edit, the checks), shared with the spec validation and the readers."""

from __future__ import annotations

from aicd.yamledit import clear_of_writer, get_key, set_keys, undo_keeping_others

__all__ = ["clear_of_writer", "get_key", "set_keys", "undo_keeping_others"]
