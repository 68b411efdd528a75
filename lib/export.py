"""Export a cross-encoder to ONNX / OpenVINO (optimised, int8) for CPU serving, and load it back.

Why not sentence-transformers' own `export_*` helpers: they go through optimum-onnx and
optimum-intel, and no release of either installs beside our transformers 5.x (optimum-onnx 0.1
wants transformers < 4.58, optimum-intel 2.2 < 5.6; both fail to import on 5.24, checked). So the
export runs on the runtimes themselves (torch.onnx, onnxruntime's transformer optimiser and
dynamic quantiser, OpenVINO's converter, NNCF's static quantiser) and writes the directory layout
sentence-transformers reads: `onnx/model*.onnx` or `openvino/openvino_model*.xml` beside the
model's config and tokenizer, so `CrossEncoder(path, backend=..., model_kwargs={"file_name": ...})`
loads it wherever optimum is installed, and `ExportedCrossEncoder` scores it without optimum.

The static int8 OpenVINO model is calibrated on the caller's pairs (the run's own training pairs),
never on a hub dataset: nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FORMATS = ("onnx", "onnx-o2", "onnx-o3", "onnx-int8", "openvino", "openvino-int8")
FILE_NAMES = {
    "onnx": "onnx/model.onnx",
    "onnx-o2": "onnx/model_O2.onnx",
    "onnx-o3": "onnx/model_O3.onnx",
    "onnx-int8": "onnx/model_qint8.onnx",
    "openvino": "openvino/openvino_model.xml",
    "openvino-int8": "openvino/openvino_model_qint8_quantized.xml",
}
EXTRA_HINT = ("pip install 'reranker-studio[export]' (or: pip install onnx onnxruntime openvino "
              "nncf)")
DEFAULT_CALIBRATION_PAIRS = 300  # what optimum-intel's OVQuantizationConfig samples by default
META = "export.json"
# Trainer state and PyTorch weights are not needed beside an exported graph.
_SKIP = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
         "training_args.bin", "model.safetensors", "pytorch_model.bin", "onnx", "openvino",
         META, "proof.json"}


class MissingExtraError(RuntimeError):
    """An optional runtime is not installed; the message says what to pip install."""


class ExportError(RuntimeError):
    pass


def backend_of(fmt: str) -> str:
    return "openvino" if fmt.startswith("openvino") else "onnx"


def check_format(fmt: str) -> str:
    f = (fmt or "").strip().lower()
    if f not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
    return f


def require(fmt: str) -> None:
    """Raise MissingExtraError naming the packages `fmt` needs when one is missing."""
    need = ["onnx", "onnxruntime"]  # every format starts from the ONNX graph
    if backend_of(fmt) == "openvino":
        need.append("openvino")
    if fmt == "openvino-int8":
        need.append("nncf")
    import importlib.util

    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"exporting to {fmt} needs {', '.join(missing)}, not installed: {EXTRA_HINT}")


@dataclass
class ExportResult:
    path: str  # the export directory (loadable by CrossEncoder with backend + file_name)
    format: str
    backend: str
    file_name: str
    source: str  # the original model directory
    seconds: float
    size_bytes: int
    calibration_pairs: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _input_names(tokenizer) -> list[str]:
    return [n for n in tokenizer.model_input_names
            if n in ("input_ids", "attention_mask", "token_type_ids")]


def _copy_model_files(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name in _SKIP or item.name.startswith("checkpoint-"):
            continue
        if item.is_file():
            shutil.copy2(item, dst / item.name)


def _export_onnx(model_dir: Path, out_file: Path) -> None:
    """torch.onnx (TorchScript exporter, opset 17), dynamic batch and sequence axes; the output
    is the raw logits, as optimum's ORTModelForSequenceClassification expects."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    # eager attention traces to the MatMul/Softmax pattern onnxruntime's fuser turns into its
    # Attention op (O2); the SDPA path traces to unfused MatMuls. (On transformers 5.5 the
    # trace fails in its mask code either way: export with the transformers this repo installs.)
    ce = CrossEncoder(str(model_dir), num_labels=1, device="cpu", local_files_only=True,
                      model_kwargs={"attn_implementation": "eager"})
    hf = ce.model.eval()
    tok = ce.tokenizer
    names = _input_names(tok)
    feats = tok([("a query", "a document"), ("another query", "a longer document text")],
                padding=True, truncation=True, return_tensors="pt")

    class _Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            return self.m(**dict(zip(names, args, strict=True))).logits

    out_file.parent.mkdir(parents=True, exist_ok=True)
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes["logits"] = {0: "batch_size"}
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Logits(hf), tuple(feats[n] for n in names), str(out_file),
                          input_names=names, output_names=["logits"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)


def _optimize_onnx(src: Path, dst: Path, config: dict, level: int) -> None:
    """onnxruntime's transformer fusions (attention, LayerNorm, GELU) = optimum's O2; O3 adds
    the GELU approximation (faster, slightly different scores)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    opts = FusionOptions("bert")
    opts.enable_gelu_approximation = level >= 3
    model_type = config.get("model_type", "bert")
    model_type = model_type if model_type in ("bert", "roberta", "distilbert") else "bert"
    opt = optimize_model(str(src), model_type=model_type,
                         num_heads=int(config.get("num_attention_heads", 0)),
                         hidden_size=int(config.get("hidden_size", 0)),
                         optimization_options=opts, opt_level=1 if level <= 2 else 2,
                         use_gpu=False)
    opt.save_model_to_file(str(dst))


def _quantize_dynamic(src: Path, dst: Path) -> None:
    """Dynamic int8: weights quantised ahead, activations at run time (no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False)


def _calibration_items(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int,
                       names: list[str]) -> list[dict[str, np.ndarray]]:
    out = []
    for q, d in pairs:
        enc = tokenizer([(q, d)], truncation=True, max_length=max_length, return_tensors="np")
        out.append({n: enc[n].astype(np.int64) for n in names})
    return out


def _to_openvino(onnx_file: Path, xml: Path, calibration: list[dict] | None) -> None:
    import openvino as ov

    model = ov.convert_model(str(onnx_file))
    if calibration is not None:
        import nncf

        model = nncf.quantize(model, nncf.Dataset(calibration),
                              model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(calibration))
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=False)


def sample_calibration(pairs, n: int = DEFAULT_CALIBRATION_PAIRS, seed: int = 13):
    """(query, document) tuples from a pairs DataFrame: n rows sampled with a fixed seed."""
    frame = pairs if len(pairs) <= n else pairs.sample(n=n, random_state=seed)
    return list(zip(frame["query"].astype(str), frame["document"].astype(str), strict=True))


def export_model(
    model_dir: str | Path,
    fmt: str,
    out_dir: str | Path,
    *,
    calibration_pairs: Sequence[tuple[str, str]] | None = None,
) -> ExportResult:
    """Write `out_dir`: the model's config/tokenizer files plus the exported graph at
    FILE_NAMES[fmt]. openvino-int8 needs `calibration_pairs` (the training pairs)."""
    fmt = check_format(fmt)
    require(fmt)
    src = Path(model_dir)
    if not (src / "config.json").is_file():
        raise ExportError(f"{src} is not a model directory (no config.json)")
    if fmt == "openvino-int8" and not calibration_pairs:
        raise ExportError("openvino-int8 is calibrated on the dataset's own pairs: none given")
    t0 = time.perf_counter()
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _copy_model_files(src, tmp)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    target = tmp / FILE_NAMES[fmt]
    base = tmp / FILE_NAMES["onnx"]
    _export_onnx(src, base)
    n_calib = None
    if fmt in ("onnx-o2", "onnx-o3"):
        _optimize_onnx(base, target, config, 2 if fmt == "onnx-o2" else 3)
    elif fmt == "onnx-int8":
        _quantize_dynamic(base, target)
    elif fmt.startswith("openvino"):
        calib = None
        if fmt == "openvino-int8":
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
            calib = _calibration_items(tok, list(calibration_pairs or []), _max_length(tmp, tok),
                                       _input_names(tok))
            n_calib = len(calib)
        _to_openvino(base, target, calib)
    if target != base:
        base.unlink()
        if not any(base.parent.iterdir()):
            base.parent.rmdir()
    size = sum(p.stat().st_size for p in target.parent.iterdir() if p.is_file())
    result = ExportResult(str(out.resolve()), fmt, backend_of(fmt), FILE_NAMES[fmt],
                          str(src.resolve()), round(time.perf_counter() - t0, 3), size, n_calib)
    (tmp / META).write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return result


def read_export(path: str | Path) -> ExportResult | None:
    try:
        data = json.loads((Path(path) / META).read_text(encoding="utf-8"))
        return ExportResult(**data)
    except (OSError, ValueError, TypeError):
        return None


def _max_length(model_dir: Path, tokenizer) -> int:
    limit = 512
    cfg = model_dir / "config.json"
    if cfg.is_file():
        limit = int(json.loads(cfg.read_text()).get("max_position_embeddings") or 512)
    ml = getattr(tokenizer, "model_max_length", None) or limit
    return int(min(ml, limit))


def _activation(model_dir: Path):
    """The CrossEncoder's saved activation (Sigmoid by default for one label)."""
    try:
        cfg = json.loads((model_dir / "config_sentence_transformers.json").read_text())
        name = str(cfg.get("activation_fn") or "")
    except (OSError, ValueError):
        name = "torch.nn.modules.activation.Sigmoid"
    if name.endswith("Identity"):
        return lambda x: x
    if name and not name.endswith("Sigmoid"):
        raise ExportError(f"activation {name} of {model_dir} is not supported (Sigmoid/Identity)")
    return lambda x: 1.0 / (1.0 + np.exp(-x))


class ExportedCrossEncoder:
    """Scores (query, document) pairs with an exported graph, as CrossEncoder.predict does
    (same tokenizer, truncation, activation), without torch or optimum in the loop."""

    def __init__(self, path: str | Path, fmt: str | None = None, threads: int | None = None,
                 max_length: int | None = None):
        from transformers import AutoTokenizer

        self.path = Path(path)
        info = read_export(self.path)
        self.format = check_format(fmt or (info.format if info else ""))
        require(self.format)
        self.file = self.path / FILE_NAMES[self.format]
        if not self.file.is_file():
            raise ExportError(f"{self.file} does not exist: export {self.format} first")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self.max_seq_length = _max_length(self.path, self.tokenizer)
        if max_length:
            self.max_seq_length = min(int(max_length), self.max_seq_length)
        self.names = _input_names(self.tokenizer)
        self._act = _activation(self.path)
        if backend_of(self.format) == "onnx":
            import onnxruntime as ort

            so = ort.SessionOptions()
            if threads:
                so.intra_op_num_threads = threads
            self._sess = ort.InferenceSession(str(self.file), so,
                                              providers=["CPUExecutionProvider"])
            self._run = lambda feeds: self._sess.run(None, feeds)[0]
        else:
            import openvino as ov

            # f32 explicitly: on CPUs with avx512_bf16/AMX OpenVINO's default precision is bf16,
            # which moved the fp32 export's scores by 2e-5 and would make its proof a bf16 one
            cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
            if threads:
                cfg["INFERENCE_NUM_THREADS"] = threads
            compiled = ov.Core().compile_model(str(self.file), "CPU", cfg)
            self._ov = compiled
            self._run = lambda feeds: compiled(feeds)[0]

    def _logits(self, batch: list[tuple[str, str]]) -> np.ndarray:
        enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_seq_length,
                             return_tensors="np")
        feeds = {n: enc[n].astype(np.int64) for n in self.names}
        return np.asarray(self._run(feeds), dtype=np.float64).reshape(len(batch), -1)[:, 0]

    def predict(self, pairs, batch_size: int = 32, show_progress_bar: bool = False,
                **_: object) -> np.ndarray:
        """Scores in input order; longest pairs first within the call (less padding)."""
        pairs = [(str(q), str(d)) for q, d in pairs]
        out = np.empty(len(pairs))
        order = np.argsort([-(len(q) + len(d)) for q, d in pairs], kind="stable")
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            out[idx] = self._act(self._logits([pairs[i] for i in idx]))
        return out
