"""Images/s of `cnnlab predict` (files: decode + preprocess + model), of the Python API on uint8
arrays, and of the exported ONNX model in onnxruntime, on the shared CIFAR-10 test folder.

    python benchmarks/predict_speed.py RUN_DIR
"""

import os
import sys
import tempfile
import time

import numpy as np

import cnnlab
from cnnlab.data import load_dataset
from cnnlab.predict import collect_images


def main() -> None:
    run_dir = sys.argv[1]
    data = os.environ.get("CNNLAB_DATA", "../shared/datasets/cifar10")
    predictor = cnnlab.load(run_dir)
    files = collect_images([os.path.join(data, "test")])
    start = time.perf_counter()
    results = predictor.predict_files(files)
    files_rate = len(files) / (time.perf_counter() - start)
    truth = [os.path.basename(os.path.dirname(f)) for f in files]
    accuracy = np.mean([r.top(predictor.classes, 1)[0][0] == t for r, t in zip(results, truth)])
    images = load_dataset(data, progress=False).test.images
    start = time.perf_counter()
    torch_probs = predictor.predict(images)
    torch_rate = len(images) / (time.perf_counter() - start)
    print(f"predict from files: {files_rate:,.0f} images/s ({len(files)} files), accuracy {100 * accuracy:.2f}%")
    print(f"predict on uint8 arrays (PyTorch): {torch_rate:,.0f} images/s")
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        path = cnnlab.export(run_dir, os.path.join(tmp, "model.onnx"), "onnx")
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        session.run(None, {"images": images[:10]})
        start = time.perf_counter()
        onnx_probs = np.concatenate(
            [session.run(None, {"images": images[i : i + 1000]})[0] for i in range(0, len(images), 1000)]
        )
        onnx_rate = len(images) / (time.perf_counter() - start)
    print(
        f"ONNX Runtime on uint8 arrays: {onnx_rate:,.0f} images/s ({onnx_rate / torch_rate:.2f}x PyTorch); "
        f"max |p_onnx - p_torch| {np.abs(onnx_probs - torch_probs).max():.1e}, "
        f"same top-1 on {np.mean(onnx_probs.argmax(1) == torch_probs.argmax(1)) * 100:.2f}%"
    )


if __name__ == "__main__":
    main()
