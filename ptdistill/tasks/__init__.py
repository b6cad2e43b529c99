"""Tasks: what the entry points run, from a composed config (or a command line) to checkpoints, files, tables.

`train` (train.py); `iou`, `efficiency`, `export` (evaluate.py task=...); `predict` (the torch path of
`ptdistill-predict`); `report` (`python -m ptdistill.tasks.report`). Only entry points and bench/ import them.
"""
