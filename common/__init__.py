"""What every floor uses: atomic file writes, JSONL and parquet writers, file digests (common/io.py)."""
