"""Thin Lambda handlers, one per task of the topic-run state machine (template.yaml names them)."""
