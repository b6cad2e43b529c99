"""Data pipeline: readers (SemanticKITTI layout, synthetic scans), transforms, collate, DataModule."""
