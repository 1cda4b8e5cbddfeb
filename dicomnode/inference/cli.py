"""`dicomnode engines build|list`: build TensorRT engines for the shipped models, and show models, backends, engines."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dicomnode.config import Config, ConfigError, load_config
from dicomnode.inference import probe
from dicomnode.inference.cuda_memory import set_device
from dicomnode.inference.runtime import Runtime, RuntimeErrorNoModel
from dicomnode.inference.shapes import precision_for
from dicomnode.inference.tensorrt_build import (EngineBuildError, EngineKey, TensorRTUnavailable, TextProgress,
                                                cached_engines, ensure_engine, require_tensorrt)
from dicomnode.inference.tensorrt_session import TensorRTSession
from dicomnode.inference.torch_session import TorchUnavailable, torch_entry
from dicomnode.inference.worker import worker_for

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2  # TensorRT / GPU missing, or an unusable config


def add_engines_parser(subparsers) -> argparse.ArgumentParser:
    """Add `engines build` and `engines list` to a CLI's subparsers; each sets `func(args) -> exit code`."""
    engines = subparsers.add_parser("engines", help="build TensorRT engines for the shipped models; list models and backends")
    commands = engines.add_subparsers(dest="engines_command", metavar="{build,list}")
    commands.required = True

    build = commands.add_parser("build", help="build (or reuse) a TensorRT engine for every model; needs TensorRT and a GPU")
    build.add_argument("--config", type=Path, help="node config (TOML); default: embedded defaults")
    build.add_argument("--model", action="append", metavar="NAME", help="only this model (repeatable); default: all")
    build.add_argument("--precision", choices=["fp16", "fp32"], help="default: inference.precision from the config")
    build.add_argument("--force", action="store_true", help="rebuild even when a matching engine is cached")
    build.set_defaults(func=engines_build)

    listing = commands.add_parser("list", help="models, cards, hashes, Device UIDs, backends and cached engines")
    listing.add_argument("--config", type=Path, help="node config (TOML); default: embedded defaults")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=engines_list)
    return engines


def _config(path: Path | None) -> Config:
    return load_config(path) if path is not None else Config().resolve_paths(Path.cwd())


def _runtime(config: Config):
    return Runtime(config.inference, storage_dir=config.node.storage_dir)


def engines_build(args: argparse.Namespace) -> int:
    try:
        config = _config(args.config)
    except ConfigError as exc:
        print(f"dicomnode engines build: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        version, gpu = require_tensorrt(config.inference.device_id)
    except TensorRTUnavailable as exc:
        print(f"dicomnode engines build: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    set_device(config.inference.device_id)
    runtime = _runtime(config)
    names = args.model or runtime.names()
    if not names:
        print(f"dicomnode engines build: no models (*.onnx + *.json) in {runtime.models_dir}", file=sys.stderr)
        return EXIT_FAILED
    requested = args.precision or config.inference.precision
    print(f"TensorRT {version} on {gpu.name} ({gpu.sm}); engine cache {runtime.engine_cache_dir}", file=sys.stderr)
    failed = []
    for index, name in enumerate(names, 1):
        progress = TextProgress(label=f"[{index}/{len(names)}] {name} ")
        try:
            card = runtime.card(name)
            key = EngineKey(name, card.sha256, version, gpu.sm, precision_for(card.data, requested), card.profile())
            path, meta, built = ensure_engine(card.path, key, runtime.engine_cache_dir, args.force, progress)
            _smoke_test(path, key, config.inference.device_id, meta["precision"])
        except (RuntimeErrorNoModel, EngineBuildError, ValueError) as exc:
            progress.message(f"FAILED: {exc}")
            failed.append(name)
            continue
        state = f"built in {meta['build_seconds']} s" if built else "cached"
        progress.message(f"{state}: {path.name} ({meta['precision']}, profile {meta['profile']['min']}..{meta['profile']['max']})")
    if failed:
        print(f"dicomnode engines build: failed for {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _smoke_test(path: Path, key, device_id: int, precision: str) -> None:
    """Load the engine and run one zero input at the profile's opt shape, on the device's worker thread."""
    def check():
        session = TensorRTSession(path, key.profile, device_id, precision)
        try:
            output = session.run(np.zeros(key.profile.opt, dtype=np.float32))
        finally:
            session.close()
        if not np.isfinite(output).all():
            raise ValueError(f"{path.name} produced non-finite output on a zero input")

    worker_for(f"cuda:{device_id}").call(check)


def describe(config: Config) -> dict:
    """Everything `engines list` shows, as plain data."""
    runtime = _runtime(config)
    backends = probe.available_backends(config.inference.device_id)
    models = []
    for name in runtime.names():
        card = runtime.card(name)
        algorithm = card.algorithm()
        entry = {"name": name, "onnx": str(card.path), "sha256": card.sha256, "device_uid": algorithm.device_uid,
                 "algorithm": algorithm.name, "version": algorithm.version, "description": algorithm.description,
                 "max_batch": card.max_batch}
        try:
            entry["tensorrt_profile"] = card.profile().as_dict()
        except ValueError as exc:
            entry["tensorrt_profile"] = f"invalid: {exc}"
        model_backends = ["onnxruntime"]
        try:
            torch_entry(card.data, card.directory)
            if "torch" in backends:
                model_backends.append("torch")
        except TorchUnavailable:
            pass
        if "tensorrt" in backends:
            model_backends.insert(0, "tensorrt")
        entry["backends"] = model_backends
        entry["engines"] = [{"file": Path(e["path"]).name, "precision": e.get("precision"), "sm": e.get("sm"),
                             "tensorrt": e.get("tensorrt_version"), "current": e.get("model_sha256") == card.sha256}
                            for e in cached_engines(runtime.engine_cache_dir, name)]
        models.append(entry)
    return {"models_dir": str(runtime.models_dir), "engine_cache_dir": str(runtime.engine_cache_dir),
            "configured_backend": config.inference.backend,
            "auto_order": [f"{b}/{d}" for b, d in probe.auto_order(config.inference.device_id)],
            "backends": backends, "gpus": [g.__dict__ for g in probe.gpus()], "models": models}


def engines_list(args: argparse.Namespace) -> int:
    try:
        config = _config(args.config)
    except ConfigError as exc:
        print(f"dicomnode engines list: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    info = describe(config)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"models: {info['models_dir']}")
    print(f"engine cache: {info['engine_cache_dir']}")
    print(f"backend: {info['configured_backend']} (auto tries {' > '.join(info['auto_order'])})")
    for name, text in info["backends"].items():
        print(f"  {name:12s} {text}")
    if "tensorrt" not in info["backends"]:
        print("  tensorrt     not available (needs `tensorrt`, cuda-python and an NVIDIA GPU)")
    if not info["models"]:
        print("no models installed")
    for model in info["models"]:
        print(f"\n{model['name']}  {model['algorithm']} {model['version']}")
        print(f"  sha256      {model['sha256']}")
        print(f"  Device UID  {model['device_uid']}")
        if model["description"]:
            print(f"  about       {model['description']}")
        profile = model["tensorrt_profile"]
        profile_text = profile if isinstance(profile, str) else f"{profile['min']} .. {profile['opt']} .. {profile['max']}"
        print(f"  profile     {profile_text}   max_batch {model['max_batch']}")
        print(f"  backends    {', '.join(model['backends'])}")
        if not model["engines"]:
            print("  engines     none cached")
        for engine in model["engines"]:
            print(f"  engine      {engine['file']} ({'current' if engine['current'] else 'stale: model changed'})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m dicomnode.inference.cli engines list`); the node's CLI adds the same parser."""
    parser = argparse.ArgumentParser(prog="dicomnode")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_engines_parser(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
