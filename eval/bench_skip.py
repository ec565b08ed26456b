"""Layer removal/skipping benchmark on the bundled SmolLM2-135M-Instruct (issue 4).

Quality: for 10/20/25/33 % of the 30 decoder layers removed (3, 6, 8, 10 layers: round(r·L)) under each
policy of `compress run --skip-policy` (bi = ShortGPT, angular = Gromov et al., uls = Unified Layer
Skipping's balanced pattern, greedy on calibration NLL, random with 3 seeds), WikiText-2 raw test perplexity
on the first --ppl-windows windows of 2048 tokens. The layers are chosen exactly as `compress run` chooses
them (compress.depth.choose.choose_layers, calibration 8 × 256 tokens of WikiText-2 valid); the perplexity
is measured with the layers bypassed (compress.depth.bypass, mode "always"), the same function as the removed
checkpoint (tests/test_skipping.py).

Speed: decode tokens/s with HF generate, batch 1, a 32-token WikiText-2 prompt, 128 new tokens (forced:
min_new_tokens), greedy, one warm-up each, median of --repeats runs, the full model and the models with the
layers statically removed (compress.depth.remove) timed in the same run, interleaved. Also Unified Layer Skipping
at decode time (prompt through all layers, new tokens through the kept ones) at 25 %, with its quality on
teacher-forced continuations (prompt 512 tokens through all layers, next 128 tokens decoded one at a time).

Resumable: results go to OUT/results.json after every step. Run alone (2 CPU cores):

    COMPRESS_DATA_DIR=../shared/data python eval/bench_skip.py --out eval/results/layer_skip
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.provenance import versions  # noqa: E402
from compress.data import calibration_samples, calibration_texts, data_dir, wikitext2_test_text  # noqa: E402
from compress.depth.select import drop_count  # noqa: E402
from compress.model import decoder_layers, load_model  # noqa: E402
from compress.evaluation.perplexity import perplexity  # noqa: E402
from compress.depth.remove import remove_layers  # noqa: E402
from compress.depth.choose import SKIP_POLICIES, choose_layers  # noqa: E402
from compress.depth.bypass import bypassing  # noqa: E402

RATIOS = (0.10, 0.20, 0.25, 0.33)
SEEDS = 3
NEW_TOKENS = 128
PROMPT_TOKENS = 32


def timed_generate(model, prompt: torch.Tensor, pad: int) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=pad)
    elapsed = time.perf_counter() - started
    assert out.shape[1] == prompt.shape[1] + NEW_TOKENS
    return elapsed


def continuation_nll(model, ids: torch.Tensor, prompt_len: int, cont_len: int) -> float:
    """Mean NLL of tokens prompt_len+1 .. prompt_len+cont_len: the prompt in one forward with the KV cache,
    then the true tokens one at a time (teacher forcing), as generation would run them."""
    nll = 0.0
    with torch.inference_mode():
        out = model(ids[None, :prompt_len], use_cache=True)
        cache, logits = out.past_key_values, out.logits[0, -1]
        for t in range(prompt_len, prompt_len + cont_len):
            nll -= torch.log_softmax(logits.float(), -1)[ids[t]].item()
            out = model(ids[None, t:t + 1], cache=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[0, -1]
    return nll / cont_len


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="eval/results/layer_skip")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--ppl-windows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--continuations", type=int, default=4, help="teacher-forced windows for decode-time ULS")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}

    def save() -> None:
        results["versions"] = versions()
        results["settings"] = {"ppl_windows": args.ppl_windows, "seq_len": 2048, "calib": "wikitext2-valid 8 x 256",
                               "ratios": RATIOS, "random_seeds": SEEDS, "new_tokens": NEW_TOKENS,
                               "prompt_tokens": PROMPT_TOKENS, "repeats": args.repeats, "dtype": "float32",
                               "threads": torch.get_num_threads()}
        path.write_text(json.dumps(results, indent=1))

    root = data_dir(args.data_dir)
    model, tokenizer = load_model(None)
    n_layers = len(decoder_layers(model))
    calib = calibration_samples(tokenizer, calibration_texts("wikitext2-valid", root), n_samples=8, seq_len=256,
                                seed=0)
    test_ids = tokenizer(wikitext2_test_text(root), return_tensors="pt").input_ids[0]
    counts = {ratio: drop_count(n_layers, drop_ratio=ratio) for ratio in RATIOS}

    def ppl(dropped: list[int]) -> float:
        with bypassing(model, dropped, mode="always"):
            return perplexity(model, test_ids, max_windows=args.ppl_windows, progress=False).ppl

    # --- quality -----------------------------------------------------------------------------------------
    quality = results.setdefault("quality", {})
    if "full" not in quality:
        quality["full"] = {"dropped": [], "ppl": ppl([])}
        save()
    greedy_order = results.get("greedy_order")
    if greedy_order is None:  # greedy is incremental: its first k removals are its choice for k
        started = time.perf_counter()
        choice = choose_layers(model, "greedy", max(counts.values()), calib)
        results["greedy_order"] = greedy_order = choice.trace
        results["greedy_seconds"] = round(time.perf_counter() - started, 1)
        save()
    for ratio, n in counts.items():
        for policy in [p for p in SKIP_POLICIES if p != "random"] + [f"random{s}" for s in range(SEEDS)]:
            key = f"{policy}-{n}"
            if key in quality:
                continue
            if policy == "greedy":
                dropped = sorted(layer for layer, _ in greedy_order[:n])
            elif policy.startswith("random"):
                dropped = choose_layers(model, "random", n, seed=int(policy.removeprefix("random"))).dropped
            else:
                dropped = choose_layers(model, policy, n, calib, progress=False).dropped
            quality[key] = {"policy": policy, "ratio": ratio, "removed": n, "dropped": dropped, "ppl": ppl(dropped)}
            print(f"{key:12s} drop {dropped} ppl {quality[key]['ppl']:.2f}", flush=True)
            save()

    # --- decode-time Unified Layer Skipping: quality on teacher-forced continuations -------------------
    uls_n = counts[0.25]
    uls_dropped = quality[f"uls-{uls_n}"]["dropped"]
    if "decode_uls" not in results:
        windows = [test_ids[i * 2048:i * 2048 + 640] for i in range(args.continuations)]
        removed = remove_layers(copy.deepcopy(model), uls_dropped)

        def decode_time(w):
            with bypassing(model, uls_dropped, mode="decode"):
                return continuation_nll(model, w, 512, 128)

        rows = {}
        for name, runner in [("full", lambda w: continuation_nll(model, w, 512, 128)),
                             ("uls decode-time", decode_time),
                             ("uls removed", lambda w: continuation_nll(removed, w, 512, 128))]:
            nll = statistics.fmean(runner(w) for w in windows)
            rows[name] = {"nll": nll, "ppl": float(torch.tensor(nll).exp())}
            print(f"continuations {name}: ppl {rows[name]['ppl']:.2f}", flush=True)
        results["decode_uls"] = {"dropped": uls_dropped, "windows": args.continuations, "prompt": 512,
                                 "continuation": 128, **rows}
        save()

    # --- speed ------------------------------------------------------------------------------------------
    if "speed" not in results:
        prompt = test_ids[None, 10_000:10_000 + PROMPT_TOKENS]
        pad = tokenizer.eos_token_id
        runners = {"full": lambda: timed_generate(model, prompt, pad)}
        for ratio, n in counts.items():
            reduced = remove_layers(copy.deepcopy(model), quality[f"bi-{n}"]["dropped"])
            runners[f"removed-{n}"] = lambda m=reduced: timed_generate(m, prompt, pad)

        def uls_decode():
            with bypassing(model, uls_dropped, mode="decode"):
                return timed_generate(model, prompt, pad)

        runners[f"uls-decode-{uls_n}"] = uls_decode
        for run in runners.values():  # warm-up
            run()
        times = {name: [] for name in runners}
        for rep in range(args.repeats):  # interleaved, so drift hits every model alike
            for name, run in runners.items():
                times[name].append(run())
            print(f"repeat {rep + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                  flush=True)
        full = statistics.median(times["full"])
        # speedup: ratio of medians; paired_speedup: median over repeats of full/model within the repeat,
        # which cancels drift that hits all models of one repeat alike
        results["speed"] = {name: {"seconds": t, "median_s": statistics.median(t),
                                   "tokens_per_s": NEW_TOKENS / statistics.median(t),
                                   "speedup": full / statistics.median(t),
                                   "paired_speedup": statistics.median(f / x for f, x in zip(times["full"], t))}
                            for name, t in times.items()}
        save()
    print(json.dumps(results["speed"], indent=1))


if __name__ == "__main__":
    main()
