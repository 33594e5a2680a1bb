"""Issue 14: does a mean-pooled head beat the CLS pooler head on the same folds?

all-MiniLM-L6-v2 was trained as a sentence encoder with *mean* pooling, while
``BertForSequenceClassification`` classifies from the ``[CLS]`` token through a pooler layer the
sentence training never touched. This fine-tunes a mean-pooled variant (masked mean of the last
hidden states → dropout → the linear head; the pooler is unused) with exactly the recipe and
folds of ``experiments/distill_cv.py --steps 1000``, and writes ``fold<i>/meanpool/result.json`` beside
that script's runs, so ``distill_cv.py report`` lists it as one more arm with its paired gain
over the baseline.

    python experiments/distill_cv.py --out .cache/distill-cv-full --steps 1000 folds   # once
    python experiments/pooling_cv.py --fold 0      # ~7 min at one thread on an idle core; then 1, 2
    python experiments/distill_cv.py --out .cache/distill-cv-full --steps 1000 report

Measured (docs/model.md, "What was tried and measured"): no gain beyond the fold spread, so the product
keeps the standard head (and with it a stock ``from_pretrained`` for every loader).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from distill_cv import _metrics  # noqa: E402
from newspulse.models.sentiment.data import DEFAULT_DEV_FILES, read_many, resolve_base_model  # noqa: E402


def mean_pooled_classifier():
    """``BertForSequenceClassification`` that classifies the masked mean of the last hidden
    states instead of the pooled ``[CLS]`` token."""
    from transformers import BertForSequenceClassification
    from transformers.modeling_outputs import SequenceClassifierOutput

    class MeanPooledBertForSequenceClassification(BertForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_: object) -> SequenceClassifierOutput:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            keep = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1e-9)
            return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))

    return MeanPooledBertForSequenceClassification


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / ".cache" / "distill-cv-full"), help="distill_cv.py's working folder (its folds)")
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="meanpool")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    import newspulse.models.sentiment.train as train
    from newspulse.models.sentiment.predict import SentimentModel
    from newspulse.models.sentiment.registry import Registry

    torch.set_num_threads(args.threads)
    cls = mean_pooled_classifier()

    def build_model(cfg: train.TrainConfig, device: str):
        base = resolve_base_model(cfg.base_model)
        model = cls.from_pretrained(base, num_labels=len(train.LABELS), id2label=dict(enumerate(train.LABELS)), label2id=dict(train.LABEL2ID)).to(device)
        if cfg.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        return model, AutoTokenizer.from_pretrained(base)

    # The training loop is the product's; only the model it builds differs.
    train.build_model = build_model
    out, i = Path(args.out), args.fold
    run = out / f"fold{i}" / args.tag
    run.mkdir(parents=True, exist_ok=True)
    allrows = pd.read_csv(out / "folds" / "all.csv", keep_default_na=False)
    held = allrows[(allrows["fold"] == i) & allrows["scored"]].reset_index(drop=True)
    dev = read_many(list(DEFAULT_DEV_FILES))
    cfg = train.TrainConfig(registry=run / "registry", train_files=[out / "folds" / f"train{i}.csv"], dev_files=[out / "folds" / "select.csv"],
                            max_steps=args.steps, evals_per_epoch=1, seed=42, promote=False, quantize_check=False)
    card = train.fit_and_register(cfg)
    vdir = Registry(cfg.registry).version_dir(card.version)
    clf = SentimentModel(cls.from_pretrained(vdir).eval(), AutoTokenizer.from_pretrained(vdir), version=card.version, max_length=cfg.max_length)
    probs = clf.predict_proba(held["text"].tolist() + dev["text"].tolist(), progress=True)
    np.savez_compressed(run / "probs.npz", held=probs[: len(held)], dev=probs[len(held) :])
    result = {"fold": i, "arm": args.tag, "steps": card.training["steps"], "seconds": card.training["seconds"], "params": card.params | {"pooling": "mean"},
              "held": _metrics(held, probs[: len(held)]), "dev": _metrics(dev, probs[len(held) :])}
    (run / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("fold", "arm", "steps")} | {"held_acc": result["held"]["accuracy"], "dev_acc": result["dev"]["accuracy"]}))


if __name__ == "__main__":
    main()
