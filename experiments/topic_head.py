"""Issue 14, topics option (c): a second head on the *sentiment* encoder, measured against the shipped
TF-IDF model. Features: the production sentiment model's encoder, mean-pooled over the first 128
tokens of each story (frozen: the forward pass serving already runs), alone (``emb``) and
concatenated to the shipped TF-IDF (``tfidf+emb``); ``tfidf`` is the shipped recipe itself. The
rest is the shipped recipe (linear SVM per category, thresholds cross-fitted in 4 folds, floor
margin -0.5, top-category fallback). Dev (trained on train) and 3-fold CV of train, the folds of
docs/model.md's threshold study. Results: bench/results/topic_head.json, docs/model.md (Topics).

    python experiments/topic_head.py emb tfidf+emb tfidf     # ~15 min at one thread

``--encoder base --layers N`` takes the features from the *base* MiniLM (not fine-tuned for
sentiment) cut to its first N layers instead, as the summariser's sentence encoder is (option b
at the summariser's cost): ``python experiments/topic_head.py --encoder base --layers 1 tfidf+emb``.
Each run adds its results to the JSON under ``<encoder>[-L<layers>]:<kind>``, keeping the rest.
"""
import argparse, json, time
from pathlib import Path

import numpy as np, scipy.sparse as sp, torch
from sklearn.model_selection import KFold
from sklearn.svm import LinearSVC
from transformers import AutoTokenizer
from newspulse.models.topics.evaluate import TOPICS_TRAIN, TOPICS_DEV, CATEGORIES_TXT, read_topics_csv, label_matrix, multilabel_metrics
from newspulse.models.topics.train import TopicTrainConfig, fit_features, tune_thresholds
from newspulse.models.topics.model import decide
from newspulse.models.backends.cuda_batched import load_encoder, mean_pooled
from newspulse.models.sentiment.data import resolve_base_model
from newspulse.models.sentiment.registry import Registry
from newspulse.settings import load_settings

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("kinds", nargs="+", choices=["emb", "tfidf", "tfidf+emb"])
ap.add_argument("--encoder", choices=["sentiment", "base"], default="sentiment", help="the production sentiment model's encoder, or the packaged base MiniLM")
ap.add_argument("--layers", type=int, default=None, help="keep only the encoder's first N layers (default: all)")
args = ap.parse_args()

torch.set_num_threads(1)
cfg = TopicTrainConfig(title_repeat=1, char_block=False)  # the word block with the headline once, as measured
cats = [c.strip() for c in CATEGORIES_TXT.read_text().split() if c.strip()]
train, dev = read_topics_csv(TOPICS_TRAIN), read_topics_csv(TOPICS_DEV)
if args.encoder == "base":
    mdir = resolve_base_model("")
else:
    _registry = Registry(load_settings().model_registry)
    mdir = str(_registry.version_dir(_registry.production_version()))
tok = AutoTokenizer.from_pretrained(mdir); enc = load_encoder(mdir, layers=args.layers, attn_implementation="sdpa").eval()
prefix = args.encoder + (f"-L{args.layers}" if args.layers else "") + ":"
def embed(texts):
    out = np.zeros((len(texts), enc.config.hidden_size), np.float32)
    order = np.argsort([len(t) for t in texts])
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            idx = order[i:i + 32]
            b = tok([texts[j] for j in idx], truncation=True, max_length=128, padding=True, return_tensors="pt")
            out[idx] = mean_pooled(enc, b["input_ids"], b["attention_mask"]).numpy()
    return out
t0 = time.time(); E_tr, E_dev = embed(train.text.tolist()), embed(dev.text.tolist()); print("embedded", round(time.time() - t0), "s", flush=True)
floor = 1 / (1 + np.exp(-cfg.min_margin))
def features(kind, tr_idx, te_texts_idx):
    """(X_train, X_test) for rows tr_idx of train and a test set (('dev', None) or ('train', idx))."""
    tr_texts = train.text.to_numpy(object)[tr_idx]
    Etr = E_tr[tr_idx]
    src, te = te_texts_idx
    te_texts = dev.text.to_numpy(object) if src == "dev" else train.text.to_numpy(object)[te]
    Ete = E_dev if src == "dev" else E_tr[te]
    if kind == "emb":
        return Etr, Ete
    vec, Xtr = fit_features(tr_texts, cfg); Xte = vec.transform(te_texts)
    if kind == "tfidf":
        return Xtr, Xte
    return sp.hstack([Xtr, sp.csr_matrix(Etr)]).tocsr(), sp.hstack([Xte, sp.csr_matrix(Ete)]).tocsr()
def fit_scores(Xtr, ytr, Xte):
    s = np.full((Xte.shape[0], ytr.shape[1]), 1 / (1 + np.exp(20)), np.float32)
    for j in range(ytr.shape[1]):
        if 0 < ytr[:, j].sum() < len(ytr):
            c = LinearSVC(C=cfg.C).fit(Xtr, ytr[:, j]); s[:, j] = 1 / (1 + np.exp(-c.decision_function(Xte)))
    return s
def model_predict(kind, tr_idx, test):
    y = label_matrix(train.labels.iloc[tr_idx].tolist(), cats)
    oof = np.zeros(y.shape, np.float32)
    for a, b in KFold(cfg.tune_folds, shuffle=True, random_state=cfg.seed).split(tr_idx):
        Xa, Xb = features(kind, tr_idx[a], ("train", tr_idx[b])); oof[b] = fit_scores(Xa, y[a], Xb)
    th = np.maximum(tune_thresholds(oof, y, min_positives=cfg.min_positives), floor)
    Xtr, Xte = features(kind, tr_idx, test)
    return decide(fit_scores(Xtr, y, Xte), th, cats)
res = {}
all_idx = np.arange(len(train))
for kind in args.kinds:
    t0 = time.time()
    m = multilabel_metrics(dev.labels.tolist(), model_predict(kind, all_idx, ("dev", None)))
    r = {"dev": (round(m["micro_f1"], 4), round(m["macro_f1"], 4)), "folds": []}
    for a, b in KFold(3, shuffle=True, random_state=cfg.seed).split(all_idx):
        m = multilabel_metrics(train.labels.iloc[b].tolist(), model_predict(kind, a, ("train", b)))
        r["folds"].append((round(m["micro_f1"], 4), round(m["macro_f1"], 4)))
    f = np.array(r["folds"]); r["cv_mean"] = f.mean(0).round(4).tolist(); r["cv_std"] = f.std(0, ddof=1).round(4).tolist(); r["s"] = round(time.time() - t0)
    res[prefix + kind] = r; print(prefix + kind, json.dumps(r), flush=True)
out = Path(__file__).resolve().parent.parent / "bench" / "results" / "topic_head.json"
doc = json.loads(out.read_text()) if out.exists() else {"what": __doc__.split("\n\n")[0], "results": {}}
doc["results"] |= res
doc.setdefault("models", {})[args.encoder] = Path(mdir).name if args.encoder == "sentiment" else "all-MiniLM-L6-v2 (packaged)"
json.dump(doc, open(out, "w"), indent=1)
