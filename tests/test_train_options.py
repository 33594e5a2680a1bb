"""The retraining options are declared once (newspulse.models.sentiment.train_options): the DAG's params are
generated from the declaration, DAG params map to TrainConfig fields through it, and every
`newspulse model train` option that sets a TrainConfig field is declared there under its CLI name.
Code only: no training, no Airflow (tests/test_dags.py checks the loaded DAG's params against
the declaration)."""

from __future__ import annotations

import dataclasses
import inspect

from newspulse.models.cli import train as train_command
from newspulse.models.sentiment.config import TrainConfig, default_config
from newspulse.models.sentiment.train_options import TRAIN_OPTIONS, config_fields, dag_param_specs

#: `newspulse model train` options that are not training options: output format and the gate.
CLI_ONLY = {"as_json", "promote"}


def test_every_declared_option_sets_a_train_config_field_or_a_default_config_argument():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for option in TRAIN_OPTIONS:
        if option.field is None:
            assert option.param in inspect.signature(default_config).parameters, option
        else:
            assert option.field in fields, option


def test_cli_options_and_the_declaration_agree():
    cli = set(inspect.signature(train_command).parameters) - CLI_ONLY
    declared = {option.cli for option in TRAIN_OPTIONS if option.cli is not None}
    assert cli == declared, f"CLI only: {sorted(cli - declared)}; declared but not on the CLI: {sorted(declared - cli)}"


def test_dag_params_are_the_declared_form_options():
    specs = dag_param_specs()
    assert list(specs) == [option.param for option in TRAIN_OPTIONS if option.in_form]
    assert all(spec["description"] for spec in specs.values()), "every form field says what it does"
    assert {"batch_size", "seed", "checkpoint_dir"} <= set(config_fields()) - set(specs), "--conf-only options still map to fields"

