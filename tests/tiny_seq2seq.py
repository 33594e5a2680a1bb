"""A randomly initialised seq2seq generator for the summariser's tests and the summaries benchmark.

A test fixture, not product code: it lives here, and bench/summaries.py puts tests/ on its path.
"""

from __future__ import annotations

from typing import Any


def random_seq2seq(tokenizer: Any, *, d_model: int = 64, layers: int = 2, seed: int = 0) -> Any:
    """A randomly initialised T5 over ``tokenizer``'s vocabulary (e.g. the packaged WordPiece).

    No generator weights can be downloaded here, so offline tests and the benchmark's smoke run
    use this: it exercises batching, truncation and the faithfulness check, not summary quality.
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=max(8, d_model // 4),
        d_ff=4 * d_model,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config).eval()
