"""Data pipeline: readers (one per dataset), transforms, collate, DataModule; `synthetic/`: the scan simulator."""
