"""The one-call GPU suite's CPU dry run: every part runs at tiny sizes, the JSON and the summary
lines are written (its numbers mean nothing on CPU)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_gpu_suite_dry_run(tmp_path, capsys):
    from benchmarks import gpu_suite

    out = tmp_path / "suite.json"
    assert gpu_suite.main(["--dry-run", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["dry_run"] is True and res["machine"]["jax"]
    assert [r["status"] for r in res["env"]] == ["ok"] * 3
    assert {r["layout"] for r in res["env"]} == {"vmap", "episodes_last"}
    assert [(r["paradigm"], r["seeds"], r["status"]) for r in res["trainer"]] == [
        (p, s, "ok") for p in gpu_suite.PARADIGMS for s in (1, 2)]
    assert res["ctde"]["status"] == "ok", res["ctde"].get("output_tail")
    lines = res["summary"]
    assert lines[0].startswith("env throughput:") and ("PASS" in lines[0] or "FAIL" in lines[0])
    assert all("x the time of" in ln for ln in lines[1:4])
    assert lines[4].startswith("main job") and "ok" in lines[4]
    assert lines[0] in capsys.readouterr().out


def test_gpu_suite_summary_verdicts():
    from benchmarks import gpu_suite

    env = [{"status": "ok", "steps_per_s": 2e7, "episodes": 10**6, "layout": "vmap"},
           {"status": "error", "episodes": 10**7, "layout": "vmap"}]
    train = [{"paradigm": p, "seeds": s, "status": "ok", "ms_per_call": ms}
             for p, (a, b) in zip(gpu_suite.PARADIGMS, [(10, 12), (10, 20), (10, 15)])
             for s, ms in ((1, a), (16, b))]
    lines = gpu_suite.summary_lines(env, train, {"status": "ok", "wall_s": 100.0,
                                                 "command": "x"})
    assert "20,000,000 steps/s" in lines[0] and lines[0].endswith("PASS")
    assert lines[1].endswith("PASS") and "1.20x" in lines[1]
    assert lines[2].endswith("FAIL") and lines[3].endswith("PASS")   # 1.5x is within target
    assert gpu_suite.summary_lines([], [], {"status": "skipped"})[0].endswith("failed)")
