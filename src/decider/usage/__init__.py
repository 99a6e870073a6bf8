"""Segment usage that survives restarts: wins, last match and first sighting per segment,
added up over every run and every process in one small file (DECIDER_USAGE_DB)."""
