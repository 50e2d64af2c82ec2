"""Helpers shared by the test levels (fake clock, the protocol contract)."""
