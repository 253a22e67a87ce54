"""Result records as JSON lines and markdown, and the ratios to the reference."""

from __future__ import annotations

import orjson

from load.report import Result, connect_table, markdown_table, ratio_table, ratios


def sample(target: str, **fields: object) -> Result:
    result = Result(scenario="fanout", target=target, clients=1000, channels=1, workers=2)
    for name, value in fields.items():
        setattr(result, name, value)
    return result


def test_a_json_line_is_the_whole_record_rounded() -> None:
    result = sample("pushhub", delivered_per_s=123456.789, latency_p99_ms=1.23456, notes=["x"])
    record = orjson.loads(result.json_line())
    assert record["delivered_per_s"] == 123456.8
    assert record["latency_p99_ms"] == 1.235
    assert record["notes"] == ["x"]
    assert record["target"] == "pushhub"
    assert record["kind"] == "run"


def test_the_table_has_a_header_a_rule_and_a_row_per_result() -> None:
    table = markdown_table([sample("reference"), sample("pushhub", step=2, kind="step")])
    lines = table.splitlines()
    assert lines[0].startswith("| target | scenario |")
    assert set(lines[1]) <= {"|", "-"}
    assert len(lines) == 4
    assert "| fanout #2 |" in lines[3]
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_the_table_flags_generator_bound_and_failed_runs() -> None:
    row = markdown_table(
        [sample("pushhub", generator_bottleneck=True, ok=False, notes=["3 messages lost"])]
    ).splitlines()[2]
    assert "GENERATOR-BOUND; 3 messages lost" in row
    assert "| NO |" in row


def test_a_ramp_summary_shows_its_best_rate() -> None:
    row = markdown_table([sample("pushhub", kind="ramp", rate=None, best_rate=450.0)]).splitlines()[
        2
    ]
    assert "| 450.0 |" in row


def test_a_pipe_in_a_note_does_not_break_the_table() -> None:
    row = markdown_table([sample("pushhub", notes=["a|b"])]).splitlines()[2]
    assert "a/b" in row


def test_ratios_are_pushhub_over_reference_for_metrics_both_measured() -> None:
    ref = sample("reference", delivered_per_s=100_000.0, server_rss_mib=50.0, latency_p99_ms=None)
    ours = sample("pushhub", delivered_per_s=80_000.0, server_rss_mib=75.0, latency_p99_ms=3.0)
    record = ratios(ref, ours)
    assert record["kind"] == "ratio"
    assert record["delivered_per_s"] == {"reference": 100000.0, "pushhub": 80000.0, "ratio": 0.8}
    assert record["server_rss_mib"]["ratio"] == 1.5
    assert "latency_p99_ms" not in record
    assert record["generator_bottleneck"] is False


def test_ratios_carry_the_generator_flag_of_either_side() -> None:
    record = ratios(sample("reference", generator_bottleneck=True), sample("pushhub"))
    assert record["generator_bottleneck"] is True


def test_ratio_table_lists_each_measured_metric() -> None:
    ref = sample("reference", delivered_per_s=100.0, server_rss_mib=50.0)
    ours = sample("pushhub", delivered_per_s=90.0, server_rss_mib=60.0)
    lines = ratio_table([ratios(ref, ours)]).splitlines()
    assert lines[0] == "| scenario | metric | reference | pushhub | pushhub / reference |"
    assert "| fanout | delivered msg/s | 100.00 | 90.00 | 0.90 |" in lines
    assert "| fanout | server RSS | 50.00 | 60.00 | 1.20 |" in lines


def test_the_connect_table_lists_only_the_scenarios_that_measure_connecting() -> None:
    storm = Result(scenario="storm", target="pushhub", clients=1000, channels=1, presence=True)
    storm.frames_received, storm.presence_events_received = 3_000, 12_345
    restart = Result(scenario="restart", target="reference", clients=10)
    restart.reconnect_p50_ms, restart.reconnect_p99_ms, restart.all_back_s = 400.0, 1500.0, 1.6
    fanout = Result(scenario="fanout", target="pushhub")
    table = connect_table([storm, fanout, restart])
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, storm, restart
    assert "| pushhub | storm | 1,000 | 1 | yes |" in lines[2]
    assert "3,000 | 12,345" in lines[2]
    assert "| 1.60 | 400 / 1,500 |" in lines[3]
    assert connect_table([fanout]) == ""
