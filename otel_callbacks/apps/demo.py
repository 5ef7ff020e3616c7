"""The main job: a real, instrumented Ultralytics training on generated data, fully offline.

Generates a tiny detection dataset, trains YOLO11n from its yaml (no weights download) on the CPU,
then validates, predicts and exports to TorchScript, all with otel_callbacks installed.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any


def prepare_offline(config_dir: Path) -> None:
    """Keep Ultralytics off the network: offline mode, a private config dir, a local font.

    Must run before ``ultralytics`` is imported (it reads these variables at import).
    """
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    fonts = config_dir / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    import matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):  # what check_font would download
        if not (fonts / name).exists():
            shutil.copy(dejavu, fonts / name)


def make_dataset(root: Path, train: int = 8, val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write ``train`` + ``val`` JPEGs with one box each, YOLO txt labels and ``data.yaml``."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        images, labels = root / "images" / split, root / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image = Image.new("RGB", (size, size), tuple(rng.randrange(40, 90) for _ in range(3)))
            w, h = rng.randrange(size // 4, size // 2), rng.randrange(size // 4, size // 2)
            x, y = rng.randrange(0, size - w), rng.randrange(0, size - h)
            ImageDraw.Draw(image).rectangle((x, y, x + w, y + h), fill=(230, 200, 40))
            image.save(images / f"{index}.jpg", quality=95)
            cx, cy = (x + w / 2) / size, (y + h / 2) / size
            (labels / f"{index}.txt").write_text(f"0 {cx:.6f} {cy:.6f} {w / size:.6f} {h / size:.6f}\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: box\n")
    return data


TRAIN_ARGS: dict[str, Any] = {
    "imgsz": 32,
    "batch": 4,
    "device": "cpu",
    "workers": 0,
    "seed": 0,
    "deterministic": True,
    "amp": False,
    "plots": False,
    "exist_ok": True,
}


def run(workdir: Path, epochs: int = 3) -> dict[str, Any]:
    """Train, validate, predict and export with otel_callbacks installed; returns what it made."""
    workdir = workdir.resolve()
    prepare_offline(workdir / "config")
    data = make_dataset(workdir / "dataset")

    from ultralytics import YOLO

    from ..ultralytics.dropin import install

    install()
    model = YOLO("yolo11n.yaml")
    runs = {"project": str(workdir / "runs"), "exist_ok": True}  # everything stays under workdir
    model.train(data=str(data), epochs=epochs, name="train", **{**TRAIN_ARGS, **runs})
    metrics = model.val(data=str(data), imgsz=32, batch=4, device="cpu", workers=0, plots=False, **runs)
    images = sorted((workdir / "dataset" / "images" / "val").glob("*.jpg"))
    results = model.predict([str(p) for p in images], imgsz=32, device="cpu", verbose=False, **runs)
    exported = model.export(format="torchscript", imgsz=32, device="cpu")
    return {"metrics": metrics, "predictions": len(results), "exported": exported, "data": data}
