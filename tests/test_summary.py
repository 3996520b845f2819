"""The end-of-run summary's data lines: a dataset name never runs into its task."""

from codiemb.utils.summary import summary_lines


def _data_lines(names):
    result = {"output_dir": "/tmp/run",
              "data": {name: {"task": "ir", "rows": 10, "skipped": {}} for name in names}}
    return [line for line in summary_lines(result) if line.startswith("data ")]


def test_short_names_keep_the_value_column():
    # hand-worked: "data " + name padded to 14 puts the task at column 19, like "run directory      "
    assert _data_lines(["stsb_train"]) == ["data stsb_train    ir, 10 rows"]
    assert "run directory      /tmp/run" in summary_lines({"output_dir": "/tmp/run"})


def test_a_long_name_is_separated_from_its_task_and_the_column_widens_for_all():
    lines = _data_lines(["stsb_train", "pubmedqa_train_mined"])
    assert lines == ["data stsb_train           ir, 10 rows",
                     "data pubmedqa_train_mined ir, 10 rows"]
    assert len({line.index("ir,") for line in lines}) == 1


def test_a_fourteen_character_name_gets_a_space():  # the old format printed "data pubmedqa_trainir"
    assert _data_lines(["pubmedqa_train"]) == ["data pubmedqa_train ir, 10 rows"]
