"""A tiny BERT cross-encoder built locally, so tests and demos run in seconds with no hub."""

from __future__ import annotations

from pathlib import Path


def build_tiny_cross_encoder(out_dir: str | Path, seed: int = 0, max_length: int = 128) -> Path:
    """2 layers, hidden 32, the bundled MiniLM vocabulary; saved as a loadable CrossEncoder."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from lib.models import default_model_path

    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), use_fast=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max(512, max_length),
        num_labels=1,
    )
    tmp = out.with_name(out.name + ".hf")
    BertForSequenceClassification(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    model = CrossEncoder(str(tmp), num_labels=1, max_length=max_length, local_files_only=True)
    model.save(str(out))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_tiny_bi_encoder(out_dir: str | Path, seed: int = 0) -> Path:
    """A 2-layer, hidden-32 BERT with mean pooling, saved as a SentenceTransformer: a fast
    stand-in for the bundled bi-encoder (RERANKER_STUDIO_BAR_BIENCODER in tests)."""
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lib.models import default_model_path

    out = Path(out_dir)
    if (out / "modules.json").is_file():
        return out
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), use_fast=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64)
    tmp = out.with_name(out.name + ".hf")
    BertModel(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    SentenceTransformer(str(tmp), local_files_only=True).save(str(out))
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def wait_until(pred, timeout: float = 90.0, every: float = 0.2):
    """Poll `pred` until it returns something truthy (returned); AssertionError on timeout.
    For tests that watch a detached worker through its files."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := pred():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting")


def run_cli(*argv: str) -> tuple[int, str]:
    """The CLI in this process: its exit code and what it printed to stdout."""
    import contextlib
    import io

    from lib import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(list(argv))
    return rc, out.getvalue()


def train_in_process(run_dir: str | Path) -> dict:
    """Run the training worker in this process (a test's run, no subprocess) and restore torch's
    thread count after: the worker sets it from the config, and later tests would inherit it."""
    import torch

    from lib.training import worker
    from lib.training.callbacks import StopFlag

    threads = torch.get_num_threads()
    try:
        return worker.train(Path(run_dir), resume=False, flag=StopFlag(Path(run_dir)))
    finally:
        torch.set_num_threads(threads)
