"""The Table 7 report: mean ± std over seeds, in the paper's row order, as Markdown, CSV and PNG."""

import csv
import json
import statistics

from ptdistill.tasks.report import write_report


def test_report_collects_runs_into_table7(tmp_path):
    values = {("kld", 0): 0.50, ("kld", 1): 0.54, ("topo+grad", 0): 0.60, ("topo+grad", 1): 0.58, ("topo", 0): 0.55}
    for i, ((loss, seed), miou) in enumerate(values.items()):
        run = tmp_path / str(i)
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"dataset": "synthetic", "loss": loss, "seed": seed, "val/mIoU": miou}))

    text = write_report(tmp_path)

    rows = list(csv.reader((tmp_path / "table7.csv").open()))
    assert rows[0] == ["loss", "synthetic"]
    assert [r[0] for r in rows[1:]] == ["kld", "topo", "topo+grad"]
    kld = [100 * values[("kld", s)] for s in (0, 1)]
    assert rows[1][1] == f"{statistics.fmean(kld):.2f} ± {statistics.stdev(kld):.2f} (n=2)"
    assert rows[2][1].endswith("(n=1)")
    assert "L_seg + L_KLD" in text
    assert (tmp_path / "table7.md").read_text().strip() == text
    assert (tmp_path / "table7.png").stat().st_size > 1000
