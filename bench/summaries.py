"""Summary quality and cost on the bundled Reuters-21578 stories.

    python bench/summaries.py                 # CPU: ROUGE, cost ratio, faithfulness rate
    python bench/summaries.py --gpu           # also summaries/s of the abstractive path (GPU host)

Quality: ROUGE-1/2/L F1 of the extractive summary against the story's title, next to lead-1
and lead-3 baselines on the same stories. ROUGE is implemented here (lower-cased alphanumeric
tokens, no stemming, F1). The title is a weak reference (a headline, often in wire shorthand),
so compare the methods with each other, not with published ROUGE figures.

Cost: CPU seconds of the extractive summariser over those of the sentiment classifier
(newspulse.models.sentiment.predict.SentimentModel on the same MiniLM base, float32 and int8) on the same articles, in
one run (a ratio, not absolute time).

Faithfulness: the share of abstractive summaries that name a number, ticker or capitalised name
missing from the story. Without a real generator (none can be downloaded here) it is measured on
a tiny randomly initialised T5, which exercises the check, not a model's quality.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # tests/tiny_seq2seq.py

from newspulse.models.sentences import split_sentences  # noqa: E402
from newspulse.schema import Article  # noqa: E402

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _f1(overlap: int, n_candidate: int, n_reference: int) -> float:
    if not overlap:
        return 0.0
    p, r = overlap / n_candidate, overlap / n_reference
    return 2 * p * r / (p + r)


def rouge_n(candidate: Sequence[str], reference: Sequence[str], n: int) -> float:
    cand = Counter(tuple(candidate[i : i + n]) for i in range(len(candidate) - n + 1))
    ref = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
    return _f1(sum((cand & ref).values()), sum(cand.values()), sum(ref.values()))


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    if not candidate or not reference:
        return 0.0
    prev = [0] * (len(reference) + 1)
    for c in candidate:
        cur = [0]
        for j, r in enumerate(reference):
            cur.append(prev[j] + 1 if c == r else max(prev[j + 1], cur[j]))
        prev = cur
    return _f1(prev[-1], len(candidate), len(reference))


def rouge(summaries: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 over pairs."""
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for s, ref in zip(summaries, references):
        c, r = tokens(s), tokens(ref)
        totals["rouge1"] += rouge_n(c, r, 1)
        totals["rouge2"] += rouge_n(c, r, 2)
        totals["rougeL"] += rouge_l(c, r)
    return {k: round(v / max(1, len(summaries)), 4) for k, v in totals.items()}


def lead(k: int) -> Callable[[Article], str]:
    def first_sentences(article: Article) -> str:
        return " ".join(split_sentences(article.body)[:k])

    return first_sentences


def load_stories(n: int, seed: int, *, skip: int = 0) -> list[Article]:
    """``n`` Reuters stories with a body of at least two sentences, a fixed random sample.

    ``skip`` drops the first rows of the shuffled order, so a tuning slice (skip=0) and the
    evaluation slice (skip=tuning size) never share a story.
    """
    import pandas as pd

    frame = pd.read_csv(ROOT / "data/news/reuters21578.csv.gz")
    frame = frame.dropna(subset=["body", "title"])
    frame = frame[frame["body"].str.len() > 200].sample(frac=1.0, random_state=seed)
    rows = frame.iloc[skip : skip + n]
    return [
        Article(published_at=r.published_at, source=r.source, title=r.title, body=r.body, url=r.url if isinstance(r.url, str) else None)
        for r in rows.itertuples()
    ]


# --- runs ----------------------------------------------------------------------------------


def _cpu_seconds(fn: Callable[[], object]) -> float:
    """CPU seconds of this process (all threads): steadier than wall time on a shared machine."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def quality(summarizers: dict[str, object], stories: list[Article]) -> dict[str, dict[str, float]]:
    """ROUGE vs the title for lead-k baselines and each extractive configuration."""
    from tqdm.auto import tqdm

    titles = [a.title for a in stories]
    rows: dict[str, list[str]] = {f"lead-{k}": [lead(k)(a) for a in stories] for k in (1, 2, 3)}
    for name, summarizer in summarizers.items():
        rows[name] = []
        for i in tqdm(range(0, len(stories), 64), desc=name, unit="batch"):
            rows[name] += summarizer.summarize(stories[i : i + 64])
    return {name: rouge(texts, titles) | {"mean_chars": round(sum(map(len, texts)) / len(texts), 1)} for name, texts in rows.items()}


def cost_ratio(summarizer, stories: list[Article]) -> dict[str, float]:
    """Extractive CPU time over the classifier's (newspulse.models.sentiment.predict.SentimentModel, same base encoder).

    The classifier head is untrained here (cost does not depend on the weights); it is timed
    on the CPU backend the service uses (ONNX Runtime), in fp32 and in int8, as NEWSPULSE_QUANTIZE
    can run it either way.
    """
    import tempfile

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from newspulse.models.backends.onnx import OnnxBackend
    from newspulse.models.sentiment.predict import SentimentModel
    from newspulse.models.summarize.extractive import packaged_encoder_path

    path = packaged_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    with tempfile.TemporaryDirectory() as tmp:  # the untrained classifier, saved for the ONNX export
        AutoModelForSequenceClassification.from_pretrained(path, num_labels=3).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        fp32 = SentimentModel(OnnxBackend.for_model(Path(tmp), "fp32"), tokenizer, version="bench")
        int8 = SentimentModel(OnnxBackend.for_model(Path(tmp), "int8"), tokenizer, version="bench-int8")
    batches = [stories[i : i + 64] for i in range(0, len(stories), 64)]
    t_sum = _cpu_seconds(lambda: [summarizer.summarize(b) for b in batches])
    t_fp32 = _cpu_seconds(lambda: [fp32.score_articles(b) for b in batches])
    t_int8 = _cpu_seconds(lambda: [int8.score_articles(b) for b in batches])
    return {
        "articles": len(stories),
        "summariser_over_classifier_fp32": round(t_sum / t_fp32, 3),
        "summariser_over_classifier_int8": round(t_sum / t_int8, 3),
    }


def faithfulness(stories: list[Article], fallback, model_path: str | None, *, batch_size: int = 16) -> dict[str, object]:
    """Share of abstractive summaries that failed the faithfulness check (and fell back)."""
    from transformers import AutoTokenizer

    from newspulse.models.summarize.abstractive import AbstractiveSummarizer, GenerationSettings, build_abstractive
    from tiny_seq2seq import random_seq2seq
    from newspulse.models.summarize.extractive import packaged_encoder_path
    from newspulse.settings import load_settings

    generation = GenerationSettings(batch_size=batch_size, max_input_tokens=256, max_new_tokens=32, num_beams=1)
    if model_path:
        settings = load_settings(summarizer="abstractive", summarizer_model=model_path, summarizer_batch_size=batch_size)
        summarizer = build_abstractive(settings, fallback)
        generator = model_path
    else:
        tokenizer = AutoTokenizer.from_pretrained(packaged_encoder_path())
        summarizer = AbstractiveSummarizer(random_seq2seq(tokenizer), tokenizer, fallback=fallback, generation=generation)
        generator = "tiny randomly initialised T5 (d_model 64) with the MiniLM WordPiece vocabulary: exercises the check, says nothing about a real model"
    for i in range(0, len(stories), 64):
        summarizer.summarize(stories[i : i + 64])
    return {
        "generator": generator,
        "summaries": summarizer.generated,
        "failed_check": summarizer.fallbacks,
        "failure_rate": round(summarizer.fallbacks / max(1, summarizer.generated), 4),
    }


def gpu_throughput(stories: list[Article], fallback, model_path: str | None, *, seconds: float = 120.0) -> dict[str, object]:
    """Summaries/s of the abstractive path on CUDA, bf16, for at most ``seconds`` of generation."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    from newspulse.models.summarize.abstractive import AbstractiveSummarizer, GenerationSettings, build_abstractive
    from tiny_seq2seq import random_seq2seq
    from newspulse.settings import load_settings

    if model_path:
        summarizer = build_abstractive(load_settings(summarizer="abstractive", summarizer_model=model_path, device="cuda"), fallback)
        generator = model_path
    else:  # a t5-small-sized random model: the throughput of that architecture, not of a trained one
        from transformers import AutoTokenizer

        from newspulse.models.summarize.extractive import packaged_encoder_path

        tokenizer = AutoTokenizer.from_pretrained(packaged_encoder_path())
        model = random_seq2seq(tokenizer, d_model=512, layers=6).to("cuda", dtype=torch.bfloat16)
        generation = GenerationSettings.from_settings(load_settings())
        summarizer = AbstractiveSummarizer(model, tokenizer, fallback=fallback, generation=generation)
        generator = "random T5 of t5-small size (d_model 512, 6+6 layers), bf16"
    summarizer.summarize(stories[:16])  # warm-up (kernels, allocator)
    done, start = 0, time.perf_counter()
    batch = summarizer.generation.batch_size * 4
    while done < len(stories) and time.perf_counter() - start < seconds:
        chunk = stories[done : done + batch]
        summarizer.summarize(chunk)
        done += len(chunk)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"generator": generator, "device": torch.cuda.get_device_name(0), "summaries": done, "seconds": round(elapsed, 2), "summaries_per_s": round(done / elapsed, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="evaluation stories (after the tuning slice)")
    parser.add_argument("--tune", type=int, default=300, help="stories reserved for tuning, never evaluated")
    parser.add_argument("--cost-n", type=int, default=200, help="stories for the CPU cost ratio")
    parser.add_argument("--faith-n", type=int, default=200, help="stories for the faithfulness rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="generator id/path for the abstractive runs (default: a random tiny T5)")
    parser.add_argument("--gpu", action="store_true", help="also measure abstractive summaries/s on CUDA (about 2 minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/summaries.json")
    args = parser.parse_args(argv)

    from newspulse.models.summarize import build_extractive
    from newspulse.models.summarize.extractive import ExtractiveSummarizer
    from newspulse.settings import load_settings

    settings = load_settings()
    stories = load_stories(args.n, args.seed, skip=args.tune)
    extractive = build_extractive(settings)
    one_sentence = ExtractiveSummarizer(extractive.encoder, dataclasses.replace(extractive.config, max_sentences=1))
    result: dict[str, object] = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "data": f"data/news/reuters21578.csv.gz: {len(stories)} stories with a body > 200 chars, seed {args.seed}, after {args.tune} tuning stories",
        "reference": "story title; ROUGE F1 on lower-cased alphanumeric tokens, no stemming",
        "extractive_settings": {
            "max_sentences": settings.summary_max_sentences,
            "max_chars": settings.summary_max_chars,
            "max_candidates": settings.summary_max_candidates,
            "encoder_layers": settings.summary_encoder_layers,
        },
        "rouge": quality({"extractive": extractive, "extractive-1-sentence": one_sentence}, stories),
        "cpu_cost": cost_ratio(extractive, stories[: args.cost_n]),
        "abstractive_faithfulness": faithfulness(stories[: args.faith_n], extractive, args.model),
    }
    if args.gpu:
        result["gpu"] = gpu_throughput(stories, extractive, args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
