"""GPU benchmark: issue 16's GPU targets in one prepared run of at most 8 minutes on one GPU.

    python bench/gpu.py            # on a CUDA host: bench/results/gpu.json
    python bench/gpu.py --smoke    # on CPU with tiny random models: proves the script runs
                                   # (var/gpu-smoke.json; its numbers measure nothing)
    bash bench/device_run.sh       # the whole run on a lent device machine (see BENCHMARKS.md)

Every figure is measured in this one run, the plain path ("before") beside the batched path
(models/backends/cuda_batched.py, "after"):

- ``headlines_per_s``: dev sentences of PhraseBank and Twitter (L ≤ 64), the production MiniLM
  in bf16, tokenisation included; ``throughput`` holds every model × path, with a BERT-base of
  FinBERT's shape (random weights, ``models/sentiment/bench.py``'s ``random_bert_classifier``) scored the
  same way, and ``speedup_vs_bert_base`` = production / BERT-base on the batched path;
- ``articles_per_s``: whole Reuters stories through ``score_articles`` (chunking included);
- ``profile``: torch profiler summaries of a headline run, plain path and batched path: wall
  time, device busy time, top ops by device time, and the host-device syncs counted;
- ``summaries_per_s``: abstractive generation with a t5-small-sized generator (random weights:
  the cost of the architecture), greedy, bf16, batched by length; beside it the old defaults
  (beam 4, batch 8) and the extractive summariser (encoder batched across articles);
- ``cuda_graphs``: the batched path replaying one CUDA graph per batch shape (last: a failure
  there leaves every figure above in place).

The production model is the registry's production version when there is one, else the base
encoder (``NEWSPULSE_BASE_MODEL``, default the packaged MiniLM) with an untrained head, which
costs the same; a base folder without weights (the device upload has no room for them) gets
random weights of its shape. The JSON is rewritten after every stage, so a run stopped at its
time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]  # pipeline.corpus, summaries.load_stories, tiny_seq2seq
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: (full run, smoke run) sizes.
SIZES = {
    "headlines": (131_072, 96),
    "headlines_plain": (16_384, 48),
    "articles": (4096, 8),
    "articles_plain": (512, 4),
    "summaries": (2048, 6),
    "summaries_before": (64, 3),
    "profiled": (16_384, 64),
}
HEADLINE_TOKENS = 64
ROUNDS = 2
#: Seconds after which a stage times no further rounds (the whole run must stay within 8 minutes).
STAGE_CAP_S = 60.0
SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "aten::item", "aten::_local_scalar_dense")


class Run:
    """The result being built, written to ``out`` after each stage."""

    def __init__(self, out: Path, result: dict[str, Any]) -> None:
        self.out = out
        self.result = result
        self.started = time.perf_counter()

    def stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        print(f"[gpu bench] {name} …", flush=True)
        try:
            self.result.update(fn())
        except Exception as err:  # a later stage must not lose the earlier ones
            self.result.setdefault("errors", {})[name] = f"{type(err).__name__}: {err}"
            print(f"[gpu bench] {name} failed: {err!r}", flush=True)
        self.result.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        self.result["seconds"] = round(time.perf_counter() - self.started, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.result, indent=2) + "\n", encoding="utf-8")


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def rate(fn: Callable[[], object], items: int, device: str) -> float:
    """Items per second of one call of ``fn`` (device work finished inside the timing)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return items / (time.perf_counter() - t0)


def best_rates(contenders: dict[str, tuple[Callable[[], object], int]], device: str, rounds: int, cap_s: float = STAGE_CAP_S) -> dict[str, float]:
    """Best of ``rounds`` per contender, contenders timed alternately (after one warm-up each).

    Rounds after the first are skipped once the stage has run ``cap_s`` seconds, so a path far
    slower than expected cannot push the run past its time limit."""
    start = time.perf_counter()
    for fn, _ in contenders.values():
        fn()
    best = {name: 0.0 for name in contenders}
    for done in range(rounds):
        if done and time.perf_counter() - start > cap_s:
            break
        for name, (fn, items) in contenders.items():
            best[name] = max(best[name], rate(fn, items, device))
    return {k: round(v, 1) for k, v in best.items()}


# --- models --------------------------------------------------------------------------------
def base_folder(settings) -> tuple[Path, str]:
    """A folder of the base encoder with weights, and what they are.

    The device upload cannot hold MiniLM's weights beside the checkout (bench/prepare_device.py),
    so a folder with config and tokenizer only gets random weights of its shape, saved once.
    """
    import torch
    from transformers import AutoConfig, AutoModel

    from newspulse.models.sentiment.data import resolve_base_model

    path = Path(resolve_base_model(settings.base_model))
    if any(path.glob("*.safetensors")) or any(path.glob("*.bin")):
        return path, f"{path.name} weights"
    random_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"newspulse-random-{path.name}"
    if not (random_dir / "model.safetensors").exists():
        for f in path.iterdir():
            if f.is_file():
                (random_dir / f.name).parent.mkdir(parents=True, exist_ok=True)
                (random_dir / f.name).write_bytes(f.read_bytes())
        torch.manual_seed(0)
        AutoModel.from_config(AutoConfig.from_pretrained(path)).save_pretrained(random_dir)
    return random_dir, f"random weights of {path.name}'s shape (its folder holds none; cost depends on shape only)"


def production_model(settings, base: Path, smoke: bool) -> tuple[Any, Any, str, int]:
    """(model, tokenizer, description, max_length) of the production classifier's shape."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from newspulse.models.sentiment.bench import random_bert_classifier
    from newspulse.models.sentiment.registry import Registry
    from newspulse.schema import LABELS

    if smoke:
        model, tok = random_bert_classifier(str(base), hidden_size=32, num_layers=2, num_heads=2)
        return model, tok, "tiny random BERT (smoke run)", 128
    registry = Registry(settings.model_registry)
    if registry.production_version() is not None:
        card = registry.production_card()
        path = registry.version_dir(card.version)
        model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="sdpa")
        return model, AutoTokenizer.from_pretrained(path), f"production model {card.version}", int(card.params.get("max_length", 128))
    labels = {"num_labels": len(LABELS), "id2label": dict(enumerate(LABELS)), "label2id": {name: i for i, name in enumerate(LABELS)}}
    model = AutoModelForSequenceClassification.from_pretrained(base, attn_implementation="sdpa", **labels)
    return model, AutoTokenizer.from_pretrained(base), "the base encoder with an untrained head: the production model's shape and cost", 128


def to_device(model: Any, device: str) -> Any:
    import torch

    return model.to(device, dtype=torch.bfloat16) if device == "cuda" else model


def classifiers(model: Any, tok: Any, version: str, max_length: int, device: str, smoke: bool) -> dict[str, Any]:
    """The plain path and the batched path over one model: ``{"plain": …, "batched": …}``."""
    from newspulse.models.backends.cuda_batched import BatchedScorer
    from newspulse.models.sentiment.predict import SentimentModel

    plain = SentimentModel(model, tok, version=version, max_length=max_length, device=device)
    plain.batched = None
    batched = SentimentModel(model, tok, version=version, max_length=max_length, device=device)
    if device != "cuda":  # the same path on CPU, sized for the smoke run
        batched.batched = BatchedScorer(model, tok, device=device, max_length=max_length, micro_batch=32, batch_tokens=512, max_rows=32, workers=2)
    return {"plain": plain, "batched": batched}


# --- stages --------------------------------------------------------------------------------
def headline_texts(n: int) -> list[str]:
    from newspulse.models.sentiment.data import PHRASEBANK_DEV, TWITTER_DEV, read_labelled_csv

    base = read_labelled_csv(PHRASEBANK_DEV)["text"].tolist() + read_labelled_csv(TWITTER_DEV)["text"].tolist()
    return (base * (n // len(base) + 1))[:n]


def headlines(prod: dict[str, Any], bert: dict[str, Any], n: int, n_plain: int, device: str, rounds: int) -> dict[str, Any]:
    texts = headline_texts(n)
    few = texts[:n_plain]
    speeds = best_rates(
        {
            "production_bf16_batched": (lambda: prod["batched"].predict_proba(texts, max_length=HEADLINE_TOKENS), len(texts)),
            "bert_base_bf16_batched": (lambda: bert["batched"].predict_proba(texts, max_length=HEADLINE_TOKENS), len(texts)),
            "production_bf16_plain_batch256": (lambda: prod["plain"].predict_proba(few, batch_size=256, max_length=HEADLINE_TOKENS), len(few)),
            "bert_base_bf16_plain_batch256": (lambda: bert["plain"].predict_proba(few, batch_size=256, max_length=HEADLINE_TOKENS), len(few)),
        },
        device,
        rounds,
    )
    plain, batched = prod["plain"].predict_proba(few[:4096], max_length=HEADLINE_TOKENS), prod["batched"].predict_proba(few[:4096], max_length=HEADLINE_TOKENS)
    return {
        "batched_vs_plain_path": {
            "texts": len(plain),
            "same_label": round(float((plain.argmax(1) == batched.argmax(1)).mean()), 4),
            "max_abs_probability_difference": round(float(abs(plain - batched).max()), 4),
        },
        "headlines_per_s": speeds["production_bf16_batched"],
        "speedup_vs_bert_base": round(speeds["production_bf16_batched"] / speeds["bert_base_bf16_batched"], 2),
        "speedup_vs_bert_base_plain_path": round(speeds["production_bf16_plain_batch256"] / speeds["bert_base_bf16_plain_batch256"], 2),
        "batched_over_plain": round(speeds["production_bf16_batched"] / speeds["production_bf16_plain_batch256"], 2),
        "throughput": speeds,
        "headlines": {"texts": len(texts), "plain_path_texts": len(few), "max_length": HEADLINE_TOKENS, "data": "data/phrasebank/dev.csv + data/twitter_financial_news/dev.csv, repeated"},
    }


def articles(prod: dict[str, Any], n: int, n_plain: int, device: str, rounds: int) -> dict[str, Any]:
    from pipeline import corpus

    stories = corpus(n)
    speeds = best_rates(
        {
            "batched": (lambda: prod["batched"].score_articles(stories), len(stories)),
            "plain": (lambda: prod["plain"].score_articles(stories[:n_plain]), min(n_plain, len(stories))),
        },
        device,
        rounds,
    )
    return {"articles_per_s": speeds["batched"], "articles": {"per_s": speeds, "stories": len(stories), "data": "data/news Reuters-21578 replay (bench/pipeline.corpus)"}}


def summaries(settings, base: Path, tok: Any, device: str, n: int, n_before: int, smoke: bool) -> dict[str, Any]:
    import torch
    from summaries import load_stories
    from tiny_seq2seq import random_seq2seq

    from newspulse.models.summarize.abstractive import AbstractiveSummarizer, GenerationSettings
    from newspulse.models.summarize.extractive import ExtractiveConfig, ExtractiveSummarizer, SentenceEncoder

    stories = load_stories(n, 0)
    encoder = SentenceEncoder(base, layers=settings.summary_encoder_layers, device=device)
    extractive = ExtractiveSummarizer(encoder, ExtractiveConfig(settings.summary_max_sentences, settings.summary_max_chars, settings.summary_max_candidates))
    size = {"d_model": 64, "layers": 2} if smoke else {"d_model": 512, "layers": 6}
    model = random_seq2seq(tok, **size)
    model = model.to(device, dtype=torch.bfloat16) if device == "cuda" else model
    new_tokens = 8 if smoke else settings.summarizer_max_new_tokens
    after = GenerationSettings(batch_size=4 if smoke else 256, max_new_tokens=new_tokens, num_beams=1)
    before = GenerationSettings(batch_size=8, max_new_tokens=new_tokens, num_beams=4)
    fast = AbstractiveSummarizer(model, tok, fallback=extractive, generation=after)
    slow = AbstractiveSummarizer(model, tok, fallback=extractive, generation=before)
    speeds = best_rates(
        {
            "abstractive_greedy_batched": (lambda: fast.generate(stories), len(stories)),
            "abstractive_beam4_batch8": (lambda: slow.generate(stories[:n_before]), min(n_before, len(stories))),
            "extractive": (lambda: extractive.summarize(stories), len(stories)),
        },
        device,
        1,
    )
    return {
        "summaries_per_s": speeds["abstractive_greedy_batched"],
        "summarizer": {
            "per_s": speeds,
            "generator": f"random T5 (d_model {size['d_model']}, {size['layers']}+{size['layers']} layers; t5-small is 512, 6+6), bf16 on CUDA",
            "max_new_tokens": new_tokens,
            "greedy_batch_size": after.batch_size,
            "note": "generate() only: random weights rarely stop early, so every summary runs to max_new_tokens (an upper bound on the cost); the faithfulness check is host work per summary",
            "stories": len(stories),
        },
    }


def profile_summary(fn: Callable[[], object], device: str, top: int = 12) -> dict[str, Any]:
    """Where the time goes in one call of ``fn``: wall and device-busy time, top ops, syncs."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    synchronize(device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()

    def device_us(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) or 0.0)

    busy_us = sum(device_us(e) for e in events)
    by_device = sorted(events, key=device_us, reverse=True)[:top]
    by_host = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    counts = {e.key: e.count for e in events}
    return {
        "wall_s": round(wall, 3),
        "device_busy_s": round(busy_us / 1e6, 3),
        "device_busy_share": round(busy_us / 1e6 / wall, 3) if device == "cuda" else None,
        "syncs": {name: counts.get(name, 0) for name in SYNC_EVENTS},
        "memcpy_calls": counts.get("cudaMemcpyAsync", 0),
        "kernel_launches": counts.get("cudaLaunchKernel", 0) + counts.get("cudaLaunchKernelExC", 0),
        "top_ops_by_device_time": [{"op": e.key[:90], "calls": e.count, "device_ms": round(device_us(e) / 1e3, 2)} for e in by_device if device_us(e) > 0],
        "top_ops_by_host_time": [{"op": e.key[:90], "calls": e.count, "host_ms": round(e.self_cpu_time_total / 1e3, 2)} for e in by_host],
        "torch": torch.__version__,
    }


def profiles(prod: dict[str, Any], n: int, device: str) -> dict[str, Any]:
    texts = headline_texts(n)
    prod["batched"].predict_proba(texts[:4096], max_length=HEADLINE_TOKENS)  # warm
    before = profile_summary(lambda: prod["plain"].predict_proba(texts, batch_size=256, max_length=HEADLINE_TOKENS), device)
    after = profile_summary(lambda: prod["batched"].predict_proba(texts, max_length=HEADLINE_TOKENS), device)
    return {"profile": {"workload": f"{len(texts)} headlines, production model, L ≤ {HEADLINE_TOKENS}", "before_plain_path": before, "after_batched_path": after}}


def cuda_graphs(model: Any, tok: Any, max_length: int, eager: Any, n: int, device: str) -> dict[str, Any]:
    """Headlines/s replaying one CUDA graph per batch shape, and its agreement with ``eager``."""
    from newspulse.models.backends.cuda_batched import BatchedScorer

    if device != "cuda":
        return {"cuda_graphs": {"skipped": "needs CUDA"}}
    scorer = BatchedScorer(model, tok, device=device, max_length=max_length, cuda_graphs=True)
    texts = headline_texts(n)
    graphed = scorer.score(texts[:4096], max_length=HEADLINE_TOKENS)
    plain = eager.predict_proba(texts[:4096], max_length=HEADLINE_TOKENS)
    speed = best_rates({"graphed": (lambda: scorer.score(texts, max_length=HEADLINE_TOKENS), len(texts))}, device, ROUNDS)["graphed"]
    return {
        "cuda_graphs": {
            "headlines_per_s": speed,
            "graphs_captured": len(scorer.captured_shapes),
            "same_label_as_eager": round(float((graphed.argmax(1) == plain.argmax(1)).mean()), 4),
            "max_abs_probability_difference": round(float(abs(graphed - plain).max()), 4),
        }
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny random models and sizes on CPU: checks the script, measures nothing")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/gpu.json; var/gpu-smoke.json with --smoke)")
    ap.add_argument("--skip", action="append", default=[], choices=["headlines", "articles", "summaries", "profile", "cuda_graphs"], help="leave a stage out (repeatable)")
    args = ap.parse_args(argv)

    import torch
    import transformers

    from newspulse.models.sentiment.bench import random_bert_classifier
    from newspulse.settings import load_settings

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise SystemExit("bench/gpu.py needs a CUDA device (use --smoke to check the script on CPU)")
    device = "cuda" if cuda and not args.smoke else "cpu"
    smoke = args.smoke
    out = args.out or ROOT / ("var/gpu-smoke.json" if smoke else "bench/results/gpu.json")
    size = {k: v[1] if smoke else v[0] for k, v in SIZES.items()}
    rounds = 1 if smoke else ROUNDS
    settings = load_settings(device=device)

    base, weights = base_folder(settings)
    model, tok, what, max_length = production_model(settings, base, smoke)
    bert_shape = {"hidden_size": 64, "num_layers": 2, "num_heads": 2} if smoke else {}
    bert_model, _ = random_bert_classifier(tok.name_or_path, **bert_shape)
    model, bert_model = to_device(model, device), to_device(bert_model, device)
    prod = classifiers(model, tok, "production", max_length, device, smoke)
    bert = classifiers(bert_model, tok, "bert-base-random", max_length, device, smoke)

    run = Run(
        out,
        {
            # report.py shows GPU figures only when "device" names one: a smoke run names none.
            "device": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "smoke": smoke,
            "production_model": what,
            "base_encoder": weights,
            "bert_base": "random BertForSequenceClassification of FinBERT's shape (hidden 768, 12 layers, 12 heads), bf16" if not smoke else "tiny random BERT (smoke run)",
            "setup": {
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "cuda": torch.version.cuda,
                "dtype": "bf16" if device == "cuda" else "fp32",
                "rounds": rounds,
                "attention": {"production": model.config._attn_implementation, "bert_base": bert_model.config._attn_implementation},
                "batched_path": "models/backends/cuda_batched.py (worker-thread tokenisation, length buckets, pinned non-blocking copies, one copy back per micro-batch)",
            },
        },
    )
    stages = {
        "headlines": lambda: headlines(prod, bert, size["headlines"], size["headlines_plain"], device, rounds),
        "articles": lambda: articles(prod, size["articles"], size["articles_plain"], device, rounds),
        "profile": lambda: profiles(prod, size["profiled"], device),
        "summaries": lambda: summaries(settings, base, tok, device, size["summaries"], size["summaries_before"], smoke),
        "cuda_graphs": lambda: cuda_graphs(model, tok, max_length, prod["batched"], size["headlines"], device),
    }
    for name, fn in stages.items():
        if name not in args.skip:
            run.stage(name, fn)
    headline = {k: v for k, v in run.result.items() if not isinstance(v, (dict, list))}
    print(json.dumps(headline | {"errors": run.result.get("errors", {}), "written": str(out)}, indent=2))
    return 1 if run.result.get("errors") and smoke else 0


if __name__ == "__main__":
    raise SystemExit(main())
