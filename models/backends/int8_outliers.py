"""The int8 classifier's outlier channels: the few activation channels that stay fp32.

Why: ONNX Runtime's dynamic int8 quantises each MatMul's input with one scale for the whole
batch. In the MiniLM encoder a handful of channels of the LayerNorm outputs and of the GELU
output carry values 5-10× larger than the rest (for the ``make demo`` model: up to 28 against a
99.9th percentile near 5), so that scale is coarse for every other channel, and dynamic int8
kept only 98.1-99.0 % of the fp32 verdicts per dev split and batch size. Weights alone in int8
keep 99.6 %: the loss is in the activations. Following LLM.int8's mixed-precision decomposition
(Dettmers et al., 2022), each quantised MatMul ``y = x W`` becomes

    y = int8(x with the outlier channels zeroed) · W'  +  x[:, outliers] · W[outliers, :]

where ``W'`` is ``W`` with the outlier rows zeroed: exact in fp32, and the int8 part sees a
4-7× smaller range. The outlier channels are fixed, chosen on training text (never dev) as
those with the largest absolute activation (:data:`OUTLIER_CHANNELS` per MatMul input), so the
graph is the same for the same model and calibration rows. Measured on the ``make demo`` model
(bench/int8.py, bench/results/int8.json): ≥ 99.2 % of the fp32 verdicts kept on PhraseBank dev,
Twitter dev and the SEntFiN entity verdicts at 4, 16 and 64 rows a batch, for about 30 % of the
dynamic graph's speed (still about twice fp32's). Static calibration (fixed activation scales,
MinMax / Percentile / Entropy) kept only 95 %: one scale for all sentences is worse than a
per-batch one here; per-channel smoothing (SmoothQuant) and outlier channel splitting kept fewer
verdicts than this.

Calibration rows come from the bundled training files whose licence allows commercial use
(Twitter Financial News and SEntFiN headlines with the entity marked, as the entity verdicts
are scored), so the calibration never depends on non-commercial text or dev rows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Outlier channels kept fp32 per quantised MatMul input (at most an eighth of its width, so
#: tiny test models keep most of their channels in int8).
OUTLIER_CHANNELS = 16
#: Training rows the outlier channels are chosen on (half tweets, half marked headlines).
CALIBRATION_ROWS = 300
#: Suffix of the fp32 MatMuls that carry the outlier channels (the quantiser leaves them fp32).
OUTLIER_SUFFIX = "/OutlierMatMul"


@lru_cache(maxsize=4)
def calibration_texts(rows: int = CALIBRATION_ROWS, seed: int = 0) -> tuple[str, ...]:
    """``rows`` training texts, the same for the same bundled files: half Twitter Financial News
    sentences, half SEntFiN headlines with their entity marked (the entity verdicts' input).
    Cached: every int8 load's cache key names them."""
    from newspulse.models.sentiment.data import SENTFIN_TRAIN, TWITTER_TRAIN, read_entity_csv, read_labelled_csv
    from newspulse.models.sentiment.entities import mark

    rng = np.random.default_rng(seed)
    tweets = read_labelled_csv(TWITTER_TRAIN)["text"].tolist()
    entities = read_entity_csv(SENTFIN_TRAIN)
    entities = entities[entities["spans"].map(len) > 0]
    half = rows // 2
    texts = [tweets[i] for i in sorted(rng.choice(len(tweets), half, replace=False))]
    picked = sorted(rng.choice(len(entities), rows - half, replace=False))
    return tuple(texts + [mark(entities["text"].iloc[i], entities["spans"].iloc[i]) for i in picked])


def calibration_fingerprint(texts: Iterable[str]) -> str:
    """Identity of the calibration rows, part of the int8 export's cache key."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def calibration_feeds(model_dir: Path, texts: Iterable[str], input_names: Iterable[str], batch_size: int = 16, max_length: int = 128) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for ``texts``, length-sorted batches (padding is masked out of the ranges)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = list(input_names)
    ordered = sorted(texts, key=len)
    feeds = []
    for start in range(0, len(ordered), batch_size):
        enc = tokenizer(ordered[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="np")
        ids = enc["input_ids"].astype(np.int64)
        feed = {"input_ids": ids, "attention_mask": enc["attention_mask"].astype(np.int64), "token_type_ids": np.zeros_like(ids)}
        feeds.append({n: feed[n] for n in names})
    return feeds


def channel_ranges(graph_path: Path, feeds: Iterable[dict[str, np.ndarray]], tensors: list[str]) -> dict[str, np.ndarray]:
    """Per tensor, each channel's largest absolute value over the real (unpadded) tokens."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(graph_path))
    for name in tensors:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the named tensors
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = dict(zip(outputs, session.run(None, feed), strict=True))
        real = feed["attention_mask"].astype(bool)
        for name in tensors:
            peak = np.abs(values[name][real]).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def split_outlier_channels(exported: Path, target: Path, feeds: list[dict[str, np.ndarray]], channels: int = OUTLIER_CHANNELS, skip: Iterable[str] = ()) -> list[str]:
    """Rewrite ``exported`` into ``target`` with each weight MatMul's outlier channels in an fp32
    side MatMul (module docstring); returns the names of those fp32 MatMuls, which the quantiser
    must leave alone. MatMuls sharing an input (query, key, value) share its outlier channels.
    ``skip``: node names left as they are (MatMuls that stay fp32 anyway)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(exported))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    left = set(skip)
    groups: dict[str, list] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and node.name not in left:
            groups.setdefault(node.input[0], []).append(node)
    ranges = channel_ranges(exported, feeds, list(groups))
    inserts: list[tuple[str, list, bool]] = []  # (anchor node name, new nodes, before the anchor?)
    kept_fp32 = []
    for x, matmuls in groups.items():
        width = ranges[x].shape[0]
        k = min(channels, width // 8)
        if k == 0:
            continue
        outliers = np.sort(np.argsort(-ranges[x], kind="stable")[:k]).astype(np.int64)
        mask = np.ones(width, np.float32)
        mask[outliers] = 0.0
        prefix = re.sub(r"/[^/]+$", "", matmuls[0].name)
        graph.initializer.extend([numpy_helper.from_array(mask, f"{x}/inlier_mask"), numpy_helper.from_array(outliers, f"{x}/outlier_channels")])
        inserts.append((matmuls[0].name, [
            helper.make_node("Mul", [x, f"{x}/inlier_mask"], [f"{x}/inliers"], name=f"{prefix}/Inliers"),
            helper.make_node("Gather", [x, f"{x}/outlier_channels"], [f"{x}/outliers"], name=f"{prefix}/Outliers", axis=-1),
        ], True))
        for matmul in matmuls:
            w = numpy_helper.to_array(weights[matmul.input[1]])
            inlier_w = w.copy()
            inlier_w[outliers, :] = 0.0
            weights[matmul.input[1]].CopyFrom(numpy_helper.from_array(inlier_w, matmul.input[1]))
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[outliers, :]), f"{matmul.input[1]}/outlier_rows"))
            matmul.input[0] = f"{x}/inliers"
            # The outlier part joins after the bias Add, so ONNX Runtime still fuses MatMul + bias.
            consumers = [n for n in graph.node if matmul.output[0] in n.input]
            bias = consumers[0] if len(consumers) == 1 and consumers[0].op_type == "Add" and any(i in weights for i in consumers[0].input) else matmul
            joined = bias.output[0]
            bias.output[0] = f"{joined}/inliers"
            side = matmul.name + OUTLIER_SUFFIX
            kept_fp32.append(side)
            inserts.append((bias.name, [
                helper.make_node("MatMul", [f"{x}/outliers", f"{matmul.input[1]}/outlier_rows"], [f"{joined}/outliers"], name=side),
                helper.make_node("Add", [f"{joined}/inliers", f"{joined}/outliers"], [joined], name=f"{matmul.name}/OutlierSum"),
            ], False))
    for anchor, nodes, before in inserts:  # keep the node list topologically sorted
        at = next(i for i, n in enumerate(graph.node) if n.name == anchor) + (0 if before else 1)
        for offset, node in enumerate(nodes):
            graph.node.insert(at + offset, node)
    onnx.save(model, str(target))
    return kept_fp32
