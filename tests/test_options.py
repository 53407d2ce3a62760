"""The option table (edgeprune.options) is the only declaration of an option: the CLI's
parameters, --help, the job-file reference and the run's defaults all come from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from edgeprune import options as table
from edgeprune.cli import app
from edgeprune.cli.common import PANELS
from tests.conftest import REPO, run_cli_here


def _commands() -> dict[str, object]:
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def test_the_table_keeps_its_own_rules() -> None:
    table._check_table()  # one entry per name; defaults of their kind, inside their range


@pytest.mark.parametrize("command", ["compile", "prune", "demo", "report", "targets"])
def test_every_cli_option_comes_from_the_table_without_a_default_of_its_own(
        command: str) -> None:
    """A flag is False and every other option None when not given: the only default an
    option has is the table's."""
    params = {p.name: p for p in _commands()[command].params  # type: ignore[attr-defined]
              if p.param_type_name == "option" and p.name not in ("help_",)}
    params.pop(None, None)
    declared = {o.name for o in table.for_command(command)}
    assert set(params) == declared
    for name, param in params.items():
        expected = False if table.option(name).kind == "bool" else None
        assert param.default == expected, (name, param.default)


def test_a_run_without_options_gets_the_table_defaults(tiny_state_dict: Path,
                                                       fashion_small: Path,
                                                       tmp_path: Path) -> None:
    from edgeprune.configure import config_from_options

    base = {"model": tiny_state_dict, "arch": "fashion_cnn", "data": str(fashion_small),
            "out": tmp_path / "out"}
    config = config_from_options({**base, "prune": "dscore", "flops_reduction": 0.5}, [])
    d = table.default
    assert config.budget.max_drop == d("max_drop")
    assert config.data.calib_size == d("calib_size") and config.data.seed == d("seed")
    assert config.preprocess.channels == d("channels") and config.exporter == d("exporter")
    assert config.target.name == d("target")
    prune = config.prune
    assert prune.criterion == "dscore" and prune.sensitivity_samples == d("sensitivity_samples")
    assert prune.options.min_channels == d("min_channels")
    assert prune.options.round_to == d("round_to") and prune.options.exclude == d("exclude")
    assert prune.compensation.method == d("compensate")
    assert prune.compensation.samples == d("compensate_samples")
    recover = config.recover
    assert recover.mode == d("recover") and recover.nproc == d("nproc")
    train = recover.train
    assert (train.epochs, train.lr, train.batch_size, train.kd_weight, train.temperature) == (
        d("recover_epochs"), d("recover_lr"), d("recover_batch"), d("kd_weight"),
        d("kd_temperature"))
    quant = config_from_options({**base, "quant": "ternary"}, []).quantize
    assert (quant.train.epochs, quant.train.lr, quant.ternary.method) == (
        d("quant_epochs"), d("quant_lr"), d("quant_method"))
    assert quant.ternary.prune_target == d("ternary_sparsity")
    # the dataclasses read the same table
    from edgeprune.search import SearchConfig
    from edgeprune.train import TrainConfig

    assert TrainConfig().lr == d("recover_lr") and SearchConfig().max_trials == d("max_trials")
    assert SearchConfig().flops_levels == d("search_levels")


def test_no_literal_default_left_in_the_cli() -> None:
    """The CLI modules translate argv only: no option default is written there."""
    for path in (REPO / "edgeprune" / "cli").glob("*.py"):
        text = path.read_text()
        assert "_pick(" not in text and "locals()" not in text, path
        for o in table.OPTIONS:
            if isinstance(o.default, (int, float)) and not isinstance(o.default, bool) \
                    and o.default not in (0, 1):
                assert not re.search(rf"\b{o.name}\b[^\n]*\b{o.default}\b", text), \
                    (path.name, o.name)


def test_compile_help_is_grouped_by_stage_with_examples_first() -> None:
    result = run_cli_here("compile", "--help")
    assert result.code == 0
    text = result.stdout
    assert "<bool>" not in text
    examples = text.index("Examples")
    panels = [text.index(f"─ {PANELS[g]} ") for g in table.GROUPS
              if any(o.group == g for o in table.for_command("compile"))]
    assert examples < panels[0] and panels == sorted(panels)
    for o in table.for_command("compile"):
        assert o.cli_flag in text, o.name
    assert "[default: 0.02]" in text  # --recover-lr, from the table


def test_the_job_file_reference_is_generated_and_fresh() -> None:
    path = REPO / "docs" / "options.md"
    assert path.read_text() == table.reference_markdown() + "\n", \
        "regenerate: python -m edgeprune.options > docs/options.md"
    for key in table.job_keys("compile"):
        assert f"| {key} |" in path.read_text()


def test_unknown_job_key_gets_a_did_you_mean(compile_args, tiny_state_dict: Path,
                                             tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text("max_dorp = 1.0\nrecover_lr = 0.01\n")
    result = run_cli_here(*compile_args(tiny_state_dict, "--job", job))
    assert result.code == 2
    assert "unknown keys: max_dorp (did you mean max_drop?)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_choice_out_of_its_list_names_the_choices(compile_args, tiny_state_dict: Path,
                                                    tmp_path: Path) -> None:
    result = run_cli_here(*compile_args(tiny_state_dict, "--prune", "l1", "--prune-ratio",
                                        "0.3", "--compensate", "refti"))
    assert result.code == 2 and "did you mean refit?" in result.stderr
    assert "refit, mean, bn, none" in result.stderr


def test_the_api_keywords_have_no_default_of_their_own() -> None:
    """edgeprune.compile(target=None, out=None, ...): the table fills them in (the API is
    quiet unless asked: a notebook cell is not a terminal log)."""
    import inspect

    from edgeprune import api

    for function in (api.compile, api.prune):
        for name, param in inspect.signature(function).parameters.items():
            if name in table.BY_NAME and name != "quiet":
                assert param.default is None, (function.__name__, name)
