"""Abstractive summaries from a seq2seq or causal generator via transformers ``generate()``.

transformers 5 has no summarisation pipeline, so this module does what one would: builds the
input from a prompt template (wrapped in the chat template of instruction-tuned causal models),
clips the article to the input budget on a token boundary of the original text, groups
articles of similar length into batches (little padding), runs ``generate()`` in bf16 on a GPU
with the KV cache, and decodes only the new tokens. Every summary then passes the faithfulness
check or is replaced by the extractive summary of the same article.

The host keeps ahead of the device: articles are taken in groups of ``GROUP_BATCHES`` batches,
and a worker thread builds and tokenises the inputs of the next groups while the generator
runs on this one (inputs take several tokenizer calls per article: on a GPU that is as long as
generating). Within a group, articles are sorted by input length before batching.
"""

from __future__ import annotations

import copy
import logging
import string
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from newspulse.models.backends.factory import pick_device
from newspulse.models.summarize.faithfulness import FAITHFULNESS_FALLBACKS, GENERATED_SUMMARIES, unsupported
from newspulse.pipeline import Summarizer
from newspulse.schema import Article
from newspulse.settings import Settings, SettingsError

log = logging.getLogger(__name__)

CAUSAL_PROMPT = (
    "Summarise this financial news story in at most two sentences. Use only facts, figures and "
    "names that appear in the story.\n\nTitle: {title}\n\n{body}\n\nSummary:"
)
SEQ2SEQ_PROMPT = "{text}"
#: Batches per group of articles whose inputs are prepared together (sorted by length within).
GROUP_BATCHES = 4
_FIELDS = {"title", "body", "text"}


@dataclass(frozen=True)
class GenerationSettings:
    """What ``generate()`` is asked for, from the ``NEWSPULSE_SUMMARIZER_*`` settings."""

    batch_size: int = 8
    max_input_tokens: int = 512
    max_new_tokens: int = 96
    num_beams: int = 4
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9

    @classmethod
    def from_settings(cls, settings: Settings) -> "GenerationSettings":
        return cls(
            batch_size=settings.summarizer_batch_size,
            max_input_tokens=settings.summarizer_max_input_tokens,
            max_new_tokens=settings.summarizer_max_new_tokens,
            num_beams=settings.summarizer_num_beams,
            do_sample=settings.summarizer_do_sample,
            temperature=settings.summarizer_temperature,
            top_p=settings.summarizer_top_p,
        )

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": self.do_sample, "use_cache": True}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        if self.num_beams > 1:
            kwargs["early_stopping"] = True
        return kwargs


def check_prompt(template: str) -> str:
    """The template, if it uses only {title}, {body} and {text}; else a SettingsError naming it."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise SettingsError(f"NEWSPULSE_SUMMARIZER_PROMPT: {err}") from None
    if not names & _FIELDS or names - _FIELDS:
        raise SettingsError(f"NEWSPULSE_SUMMARIZER_PROMPT: use {{title}}, {{body}} or {{text}} (got {sorted(names) or 'none'})")
    return template


class AbstractiveSummarizer:
    """Batched generation with a faithfulness check and an extractive fallback per article."""

    def __init__(self, model: Any, tokenizer: Any, *, fallback: Summarizer, generation: GenerationSettings = GenerationSettings(), prompt: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.fallback = fallback
        self.generation = generation
        self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        self.prompt = check_prompt(prompt or (SEQ2SEQ_PROMPT if self.seq2seq else CAUSAL_PROMPT))
        self.chat = not self.seq2seq and bool(getattr(tokenizer, "chat_template", None))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right" if self.seq2seq else "left"  # causal: new tokens follow the prompt
        # The worker thread that prepares inputs owns ``tokenizer``; padding and decoding on this
        # thread use a copy (a Rust tokenizer must not change settings while another thread uses it).
        self._batcher = copy.deepcopy(tokenizer)
        self.generated = 0
        self.fallbacks = 0
        self._overhead = self._count_tokens(self._render("", ""))

    # --- input ---------------------------------------------------------------------------
    def _render(self, title: str, body: str) -> str:
        text = f"{title}\n\n{body}".strip() if body else title
        prompt = self.prompt.format(title=title, body=body, text=text)
        if self.chat:
            prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        return prompt

    def _count_tokens(self, text: str) -> int:
        return len(self._encode(text)["input_ids"])

    def _encode(self, text: str, **kwargs: Any) -> dict[str, Any]:
        # A chat template already holds the special tokens; BERT-style tokenizers must not add
        # token_type_ids, which generators do not take.
        return self.tokenizer(text, add_special_tokens=not self.chat, return_token_type_ids=False, **kwargs)

    def _clip(self, text: str, budget: int) -> str:
        """The longest prefix of ``text`` that fits ``budget`` tokens, cut in the original text."""
        if budget <= 0:
            return ""
        text = text[: budget * 16]  # no token is longer: spares tokenising a whole long story
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, return_token_type_ids=False)
        offsets = enc["offset_mapping"]
        if len(offsets) <= budget:
            return text
        return text[: offsets[budget - 1][1]]

    def build_input(self, article: Article) -> str:
        """The generator input for one article, the body clipped so the prompt stays whole."""
        budget = self.generation.max_input_tokens - self._overhead - self._count_tokens(article.title)
        return self._render(article.title, self._clip(article.body, budget))

    # --- generation ----------------------------------------------------------------------
    def _inputs(self, articles: Sequence[Article]) -> list[dict[str, Any]]:
        return [self._encode(self.build_input(a), truncation=True, max_length=self.generation.max_input_tokens) for a in articles]

    def generate(self, articles: Sequence[Article]) -> list[str]:
        """Raw generator output per article (no faithfulness check), batched by input length
        within groups whose inputs a worker thread prepares ahead."""
        import torch

        out: list[str] = [""] * len(articles)
        device = next(self.model.parameters()).device
        size = self.generation.batch_size
        group = size * GROUP_BATCHES
        starts = iter(range(0, len(articles), group))
        with ThreadPoolExecutor(1, thread_name_prefix="summary-inputs") as pool, torch.inference_mode():
            ahead: list[tuple[int, Future[list[dict[str, Any]]]]] = []

            def submit() -> None:
                lo = next(starts, None)
                if lo is not None:
                    ahead.append((lo, pool.submit(self._inputs, articles[lo : lo + group])))

            submit()
            submit()
            while ahead:
                lo, future = ahead.pop(0)
                encoded = future.result()
                submit()
                order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
                for b in range(0, len(order), size):
                    idx = order[b : b + size]
                    batch = self._batcher.pad([encoded[i] for i in idx], return_tensors="pt").to(device)
                    ids = self.model.generate(**batch, **self.generation.generate_kwargs())
                    if not self.seq2seq:
                        ids = ids[:, batch["input_ids"].shape[1] :]
                    for i, text in zip(idx, self._batcher.batch_decode(ids, skip_special_tokens=True)):
                        out[lo + i] = " ".join(text.split())
        return out

    def summarize(self, articles: Sequence[Article]) -> list[str]:
        if not articles:
            return []
        try:
            summaries = self.generate(articles)
        except RuntimeError:  # e.g. CUDA out of memory: the batch still gets summaries
            log.exception("generator failed on a batch of %d; using extractive summaries", len(articles))
            return self.fallback.summarize(articles)
        self.generated += len(articles)
        GENERATED_SUMMARIES.inc(len(articles))
        bad = []
        for i, (article, summary) in enumerate(zip(articles, summaries)):
            missing = unsupported(summary, article.text, article.tickers) if summary else ["<empty>"]
            if missing:
                log.info("summary of %s not faithful (%s); using the extractive one", article.id, ", ".join(missing[:5]))
                bad.append(i)
        if bad:
            self.fallbacks += len(bad)
            FAITHFULNESS_FALLBACKS.inc(len(bad))
            for i, text in zip(bad, self.fallback.summarize([articles[i] for i in bad])):
                summaries[i] = text
        return summaries


def build_abstractive(settings: Settings, fallback: Summarizer) -> AbstractiveSummarizer:
    """Load ``settings.summarizer_model`` once: bf16 on a GPU, float32 on CPU."""
    if not settings.summarizer_model:
        raise SettingsError("NEWSPULSE_SUMMARIZER_MODEL: required when NEWSPULSE_SUMMARIZER=abstractive (HF id or local path)")
    if settings.summarizer_prompt is not None:
        check_prompt(settings.summarizer_prompt)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    name = settings.summarizer_model
    device = pick_device(settings.device)
    try:
        config = AutoConfig.from_pretrained(name)
    except OSError as err:
        raise SettingsError(f"NEWSPULSE_SUMMARIZER_MODEL: cannot load {name!r}: {err}") from None
    loader = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = loader.from_pretrained(name, dtype=dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(name)
    return AbstractiveSummarizer(
        model, tokenizer, fallback=fallback, generation=GenerationSettings.from_settings(settings), prompt=settings.summarizer_prompt
    )
