"""A bad setting stops start-up with a message naming the variable."""

import pytest
from typer.testing import CliRunner

from newspulse.settings import SettingsError, load_settings


def test_defaults_are_valid():
    s = load_settings()
    assert s.store_url.startswith("sqlite:///") and s.sqlite_path is not None


@pytest.mark.parametrize(
    "var,value",
    [
        ("NEWSPULSE_STORE_URL", "mysql://x"),
        ("NEWSPULSE_KAFKA_BOOTSTRAP", "localhost"),
        ("NEWSPULSE_BATCH_MAX_RECORDS", "0"),
        ("NEWSPULSE_DEVICE", "tpu"),
    ],
)
def test_bad_setting_is_named(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        load_settings()


def test_cli_refuses_to_start_with_bad_setting(np_env, monkeypatch):
    from newspulse.cli import app

    monkeypatch.setenv("NEWSPULSE_STORE_URL", "ftp://nope")
    result = CliRunner().invoke(app, ["store", "stats", "--json"])
    assert result.exit_code == 3  # configuration
    assert "NEWSPULSE_STORE_URL" in result.output


def test_secrets_are_not_printed(monkeypatch):
    monkeypatch.setenv("NEWSPULSE_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("NEWSPULSE_ES_API_KEY", "sekrit")
    s = load_settings()
    assert "hunter2" not in repr(s) and "sekrit" not in str(s.model_dump())


def test_readme_settings_table_is_current():
    from pathlib import Path

    from newspulse.settings import markdown_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert markdown_table() in readme, "run `make readme-settings`"


def test_readme_names_exactly_the_two_setup_commands():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("## Two commands", 1)[1].split("```")[1]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()[1:]] == ["make demo", "make test"]
