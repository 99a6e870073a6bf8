"""Profiles: records come from a source (sources/), through caches (cache), stitched into one
visitor and account per request (resolver); JSONL is the import format (jsonl)."""
