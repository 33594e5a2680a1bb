"""The retraining options are declared once (newspulse.models.sentiment.train_options): the DAG's
params and `newspulse model train`'s options are generated from the declaration, both map to
TrainConfig fields through it, and a bad value is one line of bad input (exit 2).
Code only: no training, no Airflow (tests/test_dags.py checks the loaded DAG's params against
the declaration)."""

from __future__ import annotations

import inspect

import pytest
from typer.testing import CliRunner

from newspulse.cli import app
from newspulse.errors import BadInput, ExitCode
from newspulse.models.cli import train as train_command
from newspulse.models.sentiment.config import TrainConfig, config_from_params
from newspulse.models.sentiment.train_options import TRAIN_OPTIONS, config_fields, dag_param_specs

#: `newspulse model train` options that are not training options: output format and the gate.
CLI_ONLY = {"as_json", "promote"}


def test_every_declared_option_sets_a_train_config_field_or_a_production_argument():
    for option in TRAIN_OPTIONS:
        if option.field is None:
            assert option.param in inspect.signature(TrainConfig.production).parameters, option
        else:
            assert option.field in TrainConfig.model_fields, option


def test_the_cli_options_are_generated_from_the_declaration():
    cli = set(inspect.signature(train_command).parameters) - CLI_ONLY
    assert cli == {option.cli for option in TRAIN_OPTIONS if option.cli is not None}
    help_text = CliRunner().invoke(app, ["model", "train", "--help"], terminal_width=200).output
    for option in TRAIN_OPTIONS:
        if option.cli is not None:
            flag = (option.flag or "--" + option.cli.replace("_", "-")).split("/")[0]
            assert flag in help_text, flag


def test_dag_params_are_the_declared_form_options():
    specs = dag_param_specs()
    assert list(specs) == [option.param for option in TRAIN_OPTIONS if option.in_form]
    assert all(spec["description"] for spec in specs.values()), "every form field says what it does"
    assert {"batch_size", "seed", "checkpoint_dir"} <= set(config_fields()) - set(specs), "--conf-only options still map to fields"


def test_the_cli_and_the_dag_build_the_same_run_from_the_same_options(np_env, tmp_path, monkeypatch):
    """`newspulse model train --steps 5 ...` and the DAG params of the same values give one
    TrainConfig: the command hands its options to config_from_params by their declared names."""
    import newspulse.models.sentiment.train as train_module
    from newspulse.settings import get_settings

    built = []

    def capture(cfg: TrainConfig) -> None:
        built.append(cfg)
        raise SystemExit(0)  # stop before training: only the run's configuration is under test

    monkeypatch.setattr(train_module, "train", capture)
    train_csv = tmp_path / "t.csv"
    train_csv.write_text("text,label\ngood,positive\nbad,negative\n")
    args = ["--steps", "5", "--no-distill", "--train", str(train_csv), "--max-length", "32", "--no-feedback", "--learning-rate", "0.001", "--tier", "fast"]
    CliRunner().invoke(app, ["model", "train", *args])
    (cli,) = built
    dag = config_from_params(
        {"max_steps": 5, "distill": False, "data_sources": [str(train_csv)], "max_length": 32, "include_feedback": False, "learning_rate": 0.001, "tier": "fast"},
        get_settings(),
    )
    assert cli.params() == dag.params() and cli.train_files == dag.train_files == [train_csv]
    assert (cli.max_steps, cli.soft_labels, cli.include_feedback, cli.progress, dag.progress) == (5, None, False, True, False)


def test_a_bad_training_value_is_one_line_of_bad_input(tmp_path):
    """pydantic checks every field: a wrong type or an out-of-range value ends the run before it
    starts, in one line that names the field (BadInput: exit 2 on the CLI)."""
    from newspulse.settings import load_settings

    with pytest.raises(BadInput, match=r"^training configuration: epochs: .*'many'") as err:
        TrainConfig(registry=tmp_path, epochs="many")
    assert "\n" not in str(err.value)
    with pytest.raises(BadInput, match="distill_alpha must be ≥ 0"):
        TrainConfig(registry=tmp_path, distill_alpha=-1)
    with pytest.raises(BadInput, match="tier"):
        config_from_params({"tier": "medium"}, load_settings(model_registry=tmp_path))
    with pytest.raises(BadInput, match="no_such_option"):
        TrainConfig(registry=tmp_path, no_such_option=1)
    assert TrainConfig(registry=str(tmp_path), train_files=[str(tmp_path / "a.csv")]).train_files == [tmp_path / "a.csv"], "JSON strings become paths"


def test_a_bad_value_on_the_cli_is_a_usage_error(np_env):
    """Below a declared minimum, click refuses the option; a value only TrainConfig checks
    (a batch of 0 rows) ends in one line: both exit 2, before anything trains."""
    result = CliRunner().invoke(app, ["model", "train", "--max-length", "4"])
    assert result.exit_code == ExitCode.usage and "--max-length" in result.output
    result = CliRunner().invoke(app, ["model", "train", "--batch-size", "0"])
    assert result.exit_code == ExitCode.usage, result.output
    assert result.output.strip() == "newspulse model train: training configuration: epochs and batch_size must be ≥ 1 and max_length ≥ 8"
