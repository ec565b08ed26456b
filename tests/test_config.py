"""The CLI is built from the config dataclasses: one default, one help, one bound per setting."""

import dataclasses

import pytest

from compress import (BenchConfig, BitsConfig, CompressError, DepthConfig, EvalConfig, FinetuneConfig, GPTQConfig,
                      RunConfig)
from compress.cli import build_parser
from compress.config import Parser, add_arguments, from_args


def parse(config_class, *argv):
    parser = Parser(prog="t")
    add_arguments(parser, config_class)
    return from_args(config_class, parser.parse_args(list(argv)))


def test_options_not_given_keep_the_dataclass_defaults():
    assert parse(RunConfig) == RunConfig()
    assert parse(FinetuneConfig) == FinetuneConfig()
    assert parse(BenchConfig) == BenchConfig()


def test_nested_configs_take_their_own_flags():
    config = parse(RunConfig, "--avg-bits", "3.5", "--bit-choices", "2,3,4,8", "--skip", "0.2", "--group-size", "32",
                   "--no-sym", "--max-windows", "0", "--calib-samples", "8")
    assert config.bits == BitsConfig(avg_bits=3.5, bit_choices=(2, 3, 4, 8))
    assert config.depth == DepthConfig(skip=0.2)
    assert config.gptq == GPTQConfig(group_size=32, sym=False)
    assert (config.ppl_windows, config.calib_samples) == (0, 8)
    assert dataclasses.asdict(config)["gptq"]["sym"] is False  # settings.json records the nested config


def test_lists_flags_and_optional_values():
    config = parse(FinetuneConfig, "--lr-ratio", "1,3", "--lora", "8", "--qlora")
    assert (config.lr_ratio, config.ratio, config.lora_rank, config.qlora) == ((1.0, 3.0), (1.0, 3.0), 8, True)
    assert parse(EvalConfig, "--tasks", "arc_easy, boolq", "--limit", "5") == EvalConfig(("arc_easy", "boolq"), 5)
    assert parse(BenchConfig, "--batch-sizes", "1,4").batches == (1, 4)
    assert parse(RunConfig, "--max-windows", "none").ppl_windows is None  # optional settings take "none"
    assert parse(RunConfig, "--group-size", "64").gptq.group_size == 64


@pytest.mark.parametrize("build, message", [
    (lambda: BenchConfig(repeats=0), r"repeats \(--repeats\) must be >= 1, got 0"),
    (lambda: BenchConfig(batches=(1, 0)), r"batches \(--batch-sizes\) must be >= 1, got 1,0"),
    (lambda: GPTQConfig(group_size=48), r"group_size \(--group-size\) must be one of 128, 64, 32; got 48"),
    (lambda: GPTQConfig(batch_size=0), r"^batch_size must be >= 1"),  # no CLI option: no flag named
    (lambda: BitsConfig(scorer="magic"), r"scorer \(--scorer\) must be one of lim, bi"),
    (lambda: RunConfig(plan="p.json", depth=DepthConfig(skip=0.2)), r"plan \(--plan\) already says"),
    (lambda: FinetuneConfig(lr_ratio=(1.0,)), r"lr_ratio \(--lr-ratio\) must be r_min,r_max"),
    (lambda: EvalConfig(max_length=4), r"max_length \(--max-length\) must be >= 16"),
    (lambda: DepthConfig(skip=1.0), r"skip \(--skip\) must be in \[0, 1\), got 1.0"),
    (lambda: FinetuneConfig(warmup=-0.1), r"warmup \(--warmup\) must be in \[0, 1\), got -0.1"),
])

def test_bad_settings_name_the_setting_for_both_kinds_of_user(build, message):
    with pytest.raises(CompressError, match=message):
        build()


def test_parse_errors_are_compress_errors():
    with pytest.raises(CompressError, match="--batch-sizes must be a comma list of ints, got '1,x'"):
        parse(BenchConfig, "--batch-sizes", "1,x")
    with pytest.raises(CompressError, match="--repeats must be an int, got 'many'"):
        parse(BenchConfig, "--repeats", "many")


def test_help_shows_each_default_once_from_the_config():
    run_help = " ".join(build_parser()._subparsers._group_actions[0].choices["run"].format_help().split())
    assert "(default: 3.25)" in run_help and "(default: 64)" in run_help and "--no-sym" in run_help
    assert "score_samples" not in run_help  # a setting without a flag stays off the CLI


def test_lists_become_tuples():
    assert DepthConfig(skip_layers=[3, 5]).skip_layers == (3, 5) and BenchConfig(batches=[2]).batches == (2,)
