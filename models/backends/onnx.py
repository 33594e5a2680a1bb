"""The CPU inference backend: the classifier exported to ONNX and run by ONNX Runtime.

Why: on CPU the fine-tuned MiniLM spends its time in a dozen small matrix products per layer.
ONNX Runtime runs them in int8 (VNNI where the CPU has it) with less overhead per operator than
eager PyTorch, and fuses the fp32 graph's attention, embeddings + LayerNorm, bias + GELU and
residual + LayerNorm into single kernels. ``torch.ao.quantization.quantize_dynamic``, the int8
path this replaces, is deprecated.

The recipe (:func:`build_onnx`), chosen by measurement on the shared 2-core machine
(docs/model.md, "Inference"):

1. ``torch.onnx.export`` (TorchScript exporter, eager attention: the graph whose patterns the
   ONNX Runtime transformer optimiser recognises), dynamic batch and sequence axes;
2. ``fp32``: ``onnxruntime.transformers.optimizer`` (model type ``bert``): fused Attention,
   EmbedLayerNormalization, SkipLayerNormalization and BiasGelu;
3. ``int8``: ``onnxruntime.quantization.quantize_dynamic`` of the exported graph, per-channel
   int8 weights on every MatMul and Gemm, activations quantised per batch, after the 16 outlier
   channels of each MatMul input (chosen on 300 training rows) move to fp32 side MatMuls
   (:mod:`newspulse.models.backends.int8_outliers`): plain dynamic int8 kept 98.1-99.0 % of the fp32
   verdicts per dev split and batch size, this keeps ≥ 99.4 % at about 70 % of its speed.
   Keeping the head, the last layer or the FFN outputs in fp32 kept fewer; static calibration
   (QDQ, MinMax / Percentile / Entropy) about 95 % (``bench/int8.py``, bench/results/int8.json).
   Quantising the fused graph instead (QAttention) ran 7-14 % slower; the embedding tables stay
   fp32. The summariser's sentence encoder keeps the plain dynamic recipe.

The exported files are derived data: built once per model, cached in ``<model dir>/onnx/`` under
a key of the weights' hash, the recipe and ONNX Runtime's version, so the hot-reloading classifier,
``newspulse model rescore`` and the benchmark reuse them; a stale or foreign file is never read.
Each file's sha256 sits beside it (``<file>.sha256``); a file that fails the check (truncated,
overwritten) is rebuilt, and one that ONNX Runtime still cannot load makes the classifier fall back
to torch with one warning.

Serving needs no torch: only the export does (torch is the ``train`` extra). The key leaves the
exporting torch's version out, so a serving installation without torch reads the files a
training one built; where a file is missing and torch is too, :func:`require_torch` says so in
one line instead of an import error deep in the fallback.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from newspulse.errors import NewsPulseError
from newspulse.models.backends.base import Backend
from newspulse.models.backends.int8_outliers import OUTLIER_CHANNELS, calibration_feeds, calibration_fingerprint, calibration_texts, split_outlier_channels
from newspulse.models.sentiment.registry import sha256_file
from newspulse.schema import LABELS

log = logging.getLogger(__name__)

#: Bump when the export, optimisation or quantisation steps change: old cache files are ignored.
RECIPE = "4"
PRECISIONS = ("fp32", "int8")
#: The files whose bytes decide the exported graph.
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


#: How the model card's int8 check was made (``ModelCard.quantization["method"]``).
INT8_METHOD = (
    "onnxruntime dynamic int8: per-channel int8 weights on every MatMul and Gemm, activations per batch, "
    "the 16 outlier channels of each MatMul input in fp32 (calibrated on training text), fp32 embeddings"
)


class OnnxUnavailable(RuntimeError):
    """ONNX Runtime is not installed, or this model could not be exported (the caller falls back)."""


class TorchMissing(NewsPulseError):
    """A path that needs torch (training, an ONNX export, the torch fallback, CUDA) ran in an
    installation without it: the serving install leaves torch out."""


def require_torch(purpose: str) -> None:
    """Raise :class:`TorchMissing` naming ``purpose`` unless torch can be imported."""
    try:
        import torch  # noqa: F401  (the import is the check)
    except ImportError:
        raise TorchMissing(
            f"{purpose} needs torch, which this installation leaves out (serving runs on ONNX Runtime); "
            "install it with the training extra: pip install 'newspulse[train]' (a CPU build: add --extra-index-url https://download.pytorch.org/whl/cpu)"
        ) from None


def cpu_count() -> int:
    """Cores this process may run on (a container's CPU set, not the host's core count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Graph:
    """Which network of a model folder to export.

    ``classifier``: the fine-tuned ``*ForSequenceClassification`` model, output ``logits``.
    ``sentence-embedding``: the bare encoder (``AutoModel``), cut to its first ``layers`` layers
    (None = all), output the mean-pooled, L2-normalised embedding computed inside the graph (the
    summariser's sentence encoder), so only ``(batch, hidden)`` floats come back.
    """

    task: Literal["classifier", "sentence-embedding"] = "classifier"
    layers: int | None = None

    @property
    def name(self) -> str:
        """Part of the cache file name; the classifier keeps the plain ``<key>-<precision>``."""
        return "" if self == CLASSIFIER else f"{self.task}-{self.layers or 'all'}-"


CLASSIFIER = Graph()


def cache_key(model_dir: Path, graph: Graph = CLASSIFIER, precision: str = "fp32") -> str:
    """Identity of the export: the model files' hashes, the graph, the recipe and ONNX Runtime's
    version (not the exporting torch's: a serving process has no torch to ask), and for the
    int8 classifier the calibration rows its outlier channels were chosen on."""
    import onnxruntime

    h = hashlib.sha256(f"recipe={RECIPE};ort={onnxruntime.__version__}".encode())
    if graph != CLASSIFIER:
        h.update(f";graph={graph.task}/{graph.layers}".encode())
    elif precision == "int8" and INT8_RECIPE.outlier_channels:
        h.update(f";int8={INT8_RECIPE.name};calibration={calibration_fingerprint(calibration_texts())}".encode())
    for name in MODEL_FILES:
        path = model_dir / name
        if path.exists():
            h.update(f";{name}={sha256_file(path)}".encode())
    return h.hexdigest()[:16]


def onnx_path(model_dir: Path, precision: str = "int8", cache_dir: Path | None = None, graph: Graph = CLASSIFIER) -> Path:
    """The ONNX file of ``graph`` in ``model_dir`` at ``precision``, built on first use and cached
    in ``cache_dir`` (default ``<model_dir>/onnx``).

    Raises :class:`OnnxUnavailable` when ONNX Runtime is missing or the export fails.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    try:
        import onnxruntime  # noqa: F401  (the import is the availability check)
    except ImportError as exc:
        raise OnnxUnavailable(f"onnxruntime is not installed ({exc})") from exc
    model_dir = Path(model_dir)
    cache = Path(cache_dir) if cache_dir is not None else model_dir / "onnx"
    target = cache / f"{graph.name}{cache_key(model_dir, graph, precision)}-{precision}.onnx"
    if target.exists():
        problem = cache_problem(target)
        if problem is None:
            return target
        log.warning("rebuilding the ONNX cache file %s: %s", target, problem)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as tmp, onnxruntime_quiet():
            built = build_onnx(model_dir, Path(tmp), precision, graph)
            sidecar = Path(tmp) / "sha256"
            sidecar.write_text(sha256_file(built) + "\n", encoding="utf-8")
            # The checksum lands first: a reader between the two renames sees a mismatch and
            # rebuilds, never an unchecked file. Each rename is atomic.
            os.replace(sidecar, checksum_path(target))
            os.replace(built, target)
    except OnnxUnavailable:
        raise
    except Exception as exc:  # an architecture the exporter or optimiser cannot handle, a full disk
        raise OnnxUnavailable(f"could not export {model_dir} to ONNX: {type(exc).__name__}: {exc}") from exc
    log.info("exported %s to ONNX (%s): %s", model_dir.name, precision, target)
    return target


def checksum_path(target: Path) -> Path:
    """The sidecar holding the sha256 of a cached ONNX file, written when the file is built."""
    return target.with_name(target.name + ".sha256")


def cache_problem(target: Path) -> str | None:
    """Why a cached ONNX file must not be served (None: intact). A truncated or overwritten
    file (a full disk, a killed copy, bit rot) would otherwise fail to parse or, worse, load."""
    try:
        expected = checksum_path(target).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return "it has no checksum file"
    actual = sha256_file(target)
    return None if actual == expected else f"its sha256 {actual[:12]}… differs from the recorded {expected[:12]}…"


class _OnnxRuntimeChatter(logging.Filter):
    """Drops the records ONNX Runtime's tools log while building: every fusion at INFO and
    generic advice ("consider pre-processing") at WARNING, partly through the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}onnxruntime{os.sep}" not in record.pathname


@contextmanager
def onnxruntime_quiet() -> Iterator[None]:
    """Silence ONNX Runtime's optimiser and quantiser for the duration (our own log line says
    what was fused). Their loggers have bare module names, so the filter goes on every logger."""
    import onnxruntime.quantization  # noqa: F401  (creates the loggers to filter)
    import onnxruntime.transformers.optimizer  # noqa: F401

    chatter = _OnnxRuntimeChatter()
    loggers = [logging.getLogger()] + [x for x in list(logging.root.manager.loggerDict.values()) if isinstance(x, logging.Logger)]
    for logger in loggers:
        logger.addFilter(chatter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(chatter)


def _network(model_dir: Path, graph: Graph) -> tuple[Any, str]:
    """The torch module to trace for ``graph`` and the name of its output."""
    import torch
    from transformers import AutoModelForSequenceClassification

    if graph.task == "classifier":
        return AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval(), "logits"
    from newspulse.models.backends.cuda_batched import load_encoder, mean_pooled

    encoder = load_encoder(model_dir, layers=graph.layers, attn_implementation="eager")

    class PooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.config = encoder.config  # read by build_onnx's fp32 optimiser (heads, hidden size)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return mean_pooled(lambda **kw: self.encoder(**kw, token_type_ids=token_type_ids), input_ids, attention_mask)

    return PooledEncoder().eval(), "embedding"


def build_onnx(model_dir: Path, workdir: Path, precision: str, graph: Graph = CLASSIFIER) -> Path:
    """Export ``graph``, then optimise (fp32) or quantise (int8); returns the final file inside ``workdir``."""
    from onnxruntime.transformers.optimizer import optimize_model

    exported, cfg = export_graph(model_dir, workdir, graph)
    if precision == "int8":
        return quantize_int8(exported, workdir / "int8.onnx", INT8_RECIPE if graph == CLASSIFIER else PLAIN_INT8, model_dir=model_dir)
    optimized = optimize_model(str(exported), model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    log.info("ONNX Runtime fusions for %s: %s", model_dir.name, fused or "none (unfused graph)")
    fp32 = workdir / "fp32.onnx"
    optimized.save_model_to_file(str(fp32))
    return fp32


def export_graph(model_dir: Path, workdir: Path, graph: Graph = CLASSIFIER) -> tuple[Path, Any]:
    """The plain fp32 export of ``graph`` (``workdir/exported.onnx``) and the network's config."""
    import warnings

    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model, output = _network(model_dir, graph)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    sample = tokenizer(["A sample sentence to trace the graph.", "Short."], padding=True, return_tensors="pt")
    exported = workdir / "exported.onnx"
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's own deprecation notices
        torch.onnx.export(
            model,
            (),
            str(exported),
            kwargs={n: sample[n] for n in names},
            input_names=names,
            output_names=[output],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names} | {output: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return exported, model.config


@dataclass(frozen=True)
class Int8Recipe:
    """How an exported graph is quantised: which MatMul/Gemm nodes stay fp32, whether weights
    get one scale per output channel, and how many outlier channels of each MatMul input stay
    fp32 (:mod:`newspulse.models.backends.int8_outliers`). ``bench/int8.py`` measures the candidates in
    :data:`INT8_RECIPES` per dev split and batch size; :data:`INT8_RECIPE` is the one kept."""

    name: str
    #: Node-name fragments left in fp32 (``"/classifier/"``: the head; ``"/pooler/"``: the pooler).
    keep_fp32: tuple[str, ...] = ()
    per_channel: bool = True
    outlier_channels: int = 0

    def excluded(self, node_names: Iterable[str]) -> list[str]:
        """The graph's nodes this recipe leaves in fp32."""
        return [n for n in node_names if any(part in n for part in self.keep_fp32)]


#: The candidates ``bench/int8.py`` compares (results in bench/results/int8.json).
INT8_RECIPES = (
    Int8Recipe("all-matmuls"),
    Int8Recipe("head-fp32", keep_fp32=("/pooler/", "/classifier/")),
    Int8Recipe("last-layer-fp32", keep_fp32=("/pooler/", "/classifier/", "/encoder/layer.{last}/")),
    Int8Recipe("head-fp32-per-tensor", keep_fp32=("/pooler/", "/classifier/"), per_channel=False),
    Int8Recipe("outlier-channels-fp32", outlier_channels=OUTLIER_CHANNELS),
)
#: The served classifier's recipe; the summariser's sentence encoder keeps the plain one
#: (:data:`PLAIN_INT8`), whose fidelity its own benchmark measured.
INT8_RECIPE = INT8_RECIPES[-1]
PLAIN_INT8 = INT8_RECIPES[0]


def quantize_int8(exported: Path, target: Path, recipe: Int8Recipe | None = None, *, model_dir: Path | None = None) -> Path:
    """Dynamic int8 of an exported fp32 graph: int8 weights on the MatMuls and Gemms outside
    ``recipe.keep_fp32``, activations quantised per batch. ``{last}`` in a fragment names the
    encoder's last layer, so one recipe fits any depth. With ``recipe.outlier_channels`` each
    MatMul input's outlier channels, found on :func:`~newspulse.models.backends.int8_outliers.calibration_texts`
    tokenised by ``model_dir``'s tokenizer, first move to fp32 side MatMuls."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    recipe = recipe or INT8_RECIPE
    graph = onnx.load(str(exported), load_external_data=False).graph
    names = [n.name for n in graph.node]
    layers = [int(m.group(1)) for n in names if (m := re.search(r"/layer\.(\d+)/", n))]
    fragments = tuple(f.replace("{last}", str(max(layers, default=0))) for f in recipe.keep_fp32)
    exclude = Int8Recipe(recipe.name, fragments, recipe.per_channel).excluded(names)
    source = exported
    if recipe.outlier_channels:
        if model_dir is None:
            raise ValueError(f"int8 recipe {recipe.name!r} calibrates on text: pass the model folder for its tokenizer")
        feeds = calibration_feeds(model_dir, calibration_texts(), [i.name for i in graph.input])
        source = target.with_name(f"{target.stem}-split.onnx")
        exclude += split_outlier_channels(exported, source, feeds, recipe.outlier_channels, skip=exclude)
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=recipe.per_channel, op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=exclude)
    return target


class OnnxRunner:
    """One ONNX Runtime session run from ``workers`` threads, each call on one core.

    Why not one call on every core (``intra_op_num_threads``): MiniLM's matrices are small, so
    splitting each operator across cores costs synchronisation, and idle threads must either spin
    (stealing the cores the pipeline's other stages need) or sleep (slow to wake). Whole batches
    side by side, one per core, with small batches (below) scored 651 PhraseBank sentences/s
    against 491 (median 546 best) for one 2-thread call per 64-row batch (docs/model.md, "Inference"). ``session.run`` is thread-safe and, with one intra-op thread,
    runs on the calling thread, so ``workers`` Python threads keep ``workers`` cores busy (ONNX
    Runtime releases the GIL while it computes). Callers split their work into at least
    ``workers`` batches so that a small request still uses every core, and into batches of at
    most :attr:`batch_tokens` padded tokens.
    """

    #: Padded tokens per call that ran fastest: int8 MiniLM, one core a call, 2-core machine,
    #: sorted PhraseBank sentences (~30 tokens): 688/693/678/616 sentences/s at 4/8/16/32 rows a
    #: call; Reuters body chunks (~92 tokens): 218/219/210/198 chunks/s at 2/4/8/16 rows, i.e.
    #: best around 250-500 tokens (the activations stay in the core's cache).
    batch_tokens = 384

    def __init__(self, path: Path, *, workers: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a file ONNX Runtime cannot load although its checksum matched: callers fall back
            raise OnnxUnavailable(f"ONNX Runtime could not load {path}: {type(exc).__name__}: {exc}") from exc
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.workers = max(1, workers or cpu_count())
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnxruntime") if self.workers > 1 else None
        self.path = Path(path)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The first output for one padded batch (``token_type_ids`` are zeros: one segment)."""
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}
        return self.session.run(None, {name: feed[name] for name in self.inputs})[0]

    def run_many(self, batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(indices, output)`` per ``(indices, input_ids, attention_mask)`` batch, in input order,
        ``workers`` batches at a time. At most two batches per worker are in flight, so a lazy
        input (a progress bar over a generator) is consumed as the work is done, not up front."""
        if self._pool is None:
            for idx, ids, mask in batches:
                yield idx, self.run(ids, mask)
            return
        pending: deque[tuple[np.ndarray, Future]] = deque()
        for idx, ids, mask in batches:
            pending.append((idx, self._pool.submit(self.run, ids, mask)))
            if len(pending) >= 2 * self.workers:
                head, future = pending.popleft()
                yield head, future.result()
        while pending:
            head, future = pending.popleft()
            yield head, future.result()


class OnnxBackend(Backend):
    """Runs an exported classifier with ONNX Runtime on the CPU (see :class:`OnnxRunner`)."""

    name = "onnxruntime"

    def __init__(self, path: Path, *, precision: str, max_positions: int, workers: int | None = None) -> None:
        self.runner = OnnxRunner(path, workers=workers)
        self.parallel = self.runner.workers
        self.batch_tokens = self.runner.batch_tokens
        self.precision = precision
        self.max_positions = max_positions
        self.path = Path(path)

    @classmethod
    def for_model(cls, model_dir: Path, precision: str = "int8", *, cache_dir: Path | None = None, workers: int | None = None) -> "OnnxBackend":
        """The backend for a saved Hugging Face classifier folder (exported on first use)."""
        from transformers import AutoConfig

        path = onnx_path(model_dir, precision, cache_dir)
        limit = getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", 512) or 512
        return cls(path, precision=precision, max_positions=limit, workers=workers)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.runner.run(input_ids, attention_mask)

    def logits_many(self, batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.runner.run_many(batches)


@dataclass
class MentionCheck:
    """Entity-level rows for the int8 check: ``(text, spans)`` items as ``score_mentions`` takes
    them, their gold labels, and the fp32 entity verdicts to keep."""

    items: list[tuple[str, Any]]
    labels: list[str]
    reference: list[str]


#: Rows per call the int8 check scores each split at: dynamic int8 scales activations per batch,
#: so a verdict can move with its batch-mates; serving sees both small and large batches.
CHECK_BATCH_SIZES = (8, 64)


def int8_check(
    model_dir: Path,
    card,
    texts: list[str],
    labels: list[str],
    reference: list[str],
    min_agreement: float,
    max_f1_drop: float,
    mentions: MentionCheck | None = None,
    sources: list[str] | None = None,
    batch_sizes: tuple[int, ...] = CHECK_BATCH_SIZES,
) -> dict:
    """The card's ``quantization`` entry: per dev split (``sources``, one name per row; one
    split ``dev`` without it) and per batch size, the share of the fp32 predictions
    ``reference`` that the int8 model keeps and both macro-F1s; ``agreement`` and
    ``dev_macro_f1_int8`` are the worst of them; and ``recommended`` (then ``quantize=auto``
    serves int8).

    Recommended only when int8 keeps the verdicts: on every split and batch size it keeps at
    least ``min_agreement`` of the fp32 predictions *and* its macro-F1 is at most
    ``max_f1_drop`` below fp32's (issue 26: a model that flips verdicts serves fp32). With
    ``mentions`` the entity verdicts must pass the same test too (``entity_agreement`` etc.).
    Without an int8 backend nothing is recommended."""
    from newspulse.models.sentiment.predict import SentimentModel

    int8 = SentimentModel.from_dir(Path(model_dir), device="cpu", quantize="on", card=card)
    if not int8.quantized:  # ONNX Runtime missing or the export failed (cpu_backend logged why)
        return {"method": None, "recommended": False, "threshold": min_agreement, "max_f1_drop": max_f1_drop}
    names = list(sources) if sources is not None else ["dev"] * len(texts)
    splits: dict[str, dict] = {}
    passed = True
    worst_agreement, worst_int8_f1, fp32_f1 = 1.0, 1.0, 1.0
    for split in dict.fromkeys(names):
        rows = [i for i, name in enumerate(names) if name == split]
        part = [texts[i] for i in rows]
        entry: dict[str, Any] = {"rows": len(rows)}
        for bs in batch_sizes:
            fid = _fidelity(int8.predict(part, batch_size=bs), [labels[i] for i in rows], [reference[i] for i in rows])
            entry["dev_macro_f1_fp32"] = fid["fp32"]
            entry[f"batch_{bs}"] = {"agreement": fid["agreement"], "dev_macro_f1_int8": fid["int8"]}
            passed = passed and fid["agreement"] >= min_agreement and fid["fp32"] - fid["int8"] <= max_f1_drop
            if fid["agreement"] < worst_agreement or (fid["agreement"] == worst_agreement and fid["int8"] < worst_int8_f1):
                worst_agreement, worst_int8_f1, fp32_f1 = fid["agreement"], fid["int8"], fid["fp32"]
        splits[split] = entry
    result = {
        "method": INT8_METHOD,
        "recipe": INT8_RECIPE.name,
        "agreement": worst_agreement,
        "threshold": min_agreement,
        "dev_macro_f1_int8": worst_int8_f1,
        "dev_macro_f1_fp32": fp32_f1,
        "max_f1_drop": max_f1_drop,
        "batch_sizes": list(batch_sizes),
        "splits": splits,
    }
    if mentions is not None:
        predicted = [LABELS[i] for i in int8.score_mentions(mentions.items).argmax(axis=1)]
        entity = _fidelity(predicted, mentions.labels, mentions.reference)
        result.update(entity_agreement=entity["agreement"], entity_macro_f1_int8=entity["int8"], entity_macro_f1_fp32=entity["fp32"])
        passed = passed and entity["agreement"] >= min_agreement and entity["fp32"] - entity["int8"] <= max_f1_drop
    result["recommended"] = passed
    return result


def _fidelity(predicted: list[str], labels: list[str], reference: list[str]) -> dict[str, float]:
    """Share of the fp32 ``reference`` that ``predicted`` keeps, and both macro-F1s on ``labels``."""
    from newspulse.models.sentiment.evaluate import classification_metrics

    return {
        "agreement": round(float(np.mean([a == b for a, b in zip(predicted, reference, strict=True)])), 4),
        "int8": round(classification_metrics(labels, predicted)["macro_f1"], 4),
        "fp32": round(classification_metrics(labels, reference)["macro_f1"], 4),
    }
