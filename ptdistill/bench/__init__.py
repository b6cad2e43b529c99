"""Benchmark scripts, each printing a table (`python -m ptdistill.bench.<name>`), and what they share.

Shared with the efficiency task and the tests: synthetic batches (`batches`), FLOP and memory counting
(`flops`, `memory`), a nuScenes on disk (`nuscenes_layout`), the naive persistence baseline (`naive_rips`),
and kd_gain's teacher-free control term (`label_teacher`).
"""
