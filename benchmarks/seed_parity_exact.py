"""seed_parity.py's exact level (its docstring says what is compared): Keras's initial weights carried into
the seed preset's model, the same images through cnnlab's loader, the preset's optimiser, fp32."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from record import write_record

from cnnlab import preset
from cnnlab.models.alexnet import KerasBatchNorm1d, KerasBatchNorm2d
from cnnlab.optim import build_optimizer
from cnnlab.pipeline import build_model, load_data, make_loader, preprocessing, upscale_in_model
from cnnlab.training import train

HERE = os.path.dirname(os.path.abspath(__file__))


def batch_folder(data: str, per_class: int) -> str:
    """train/<class>/ under /tmp with the first `per_class` files (sorted) of each class, as symlinks."""
    folder = tempfile.mkdtemp(prefix="cnnlab-parity-exact-")
    source = os.path.join(os.path.abspath(data), "train")
    for name in sorted(c for c in os.listdir(source) if not c.startswith(".")):
        os.makedirs(os.path.join(folder, "train", name))
        for file in sorted(os.listdir(os.path.join(source, name)))[:per_class]:
            os.symlink(os.path.join(source, name, file), os.path.join(folder, "train", name, file))
    return folder


def layers(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """The model's convolutions and dense layers, and its BatchNorms, in order (Keras's layer order too)."""
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    norms = [m for m in model.modules() if isinstance(m, (KerasBatchNorm1d, KerasBatchNorm2d))]
    return weighted, norms


def keras_layer_ids(saved, prefix: str) -> tuple[list[int], list[int]]:
    """The Keras layer indices holding a kernel, and those holding a BN's gamma, in order."""
    ids = sorted({int(k.split("/")[1]) for k in saved.files if k.startswith(prefix)})
    return (
        [i for i in ids if f"{prefix}{i}/kernel" in saved.files],
        [i for i in ids if f"{prefix}{i}/gamma" in saved.files],
    )


def to_torch(kernel: np.ndarray, after_flatten: tuple[int, int, int] | None = None) -> np.ndarray:
    """A Keras kernel in PyTorch's layout: conv HWIO -> OIHW; dense (in, out) -> (out, in), the first dense
    after a Flatten of NHWC features reordered to the flatten of NCHW ones."""
    if kernel.ndim == 4:
        return kernel.transpose(3, 2, 0, 1)
    if after_flatten is not None:
        h, w, c = after_flatten
        return kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(kernel.shape[1], -1)
    return kernel.T


def keras_tensors(saved, prefix: str, grads: bool = False) -> dict[str, np.ndarray]:
    """Keras's values under `prefix` in the torch model's names and layouts: w<i>/b<i> for the i-th
    weighted layer, bn<j>.weight/bias/running_mean/running_var for the j-th BatchNorm."""
    kernels, norms = keras_layer_ids(saved, "init/")
    out = {}
    for i, k in enumerate(kernels):
        kernel = saved[f"{prefix}{k}/kernel"]
        flat = (6, 6, 256) if kernel.ndim == 2 and kernel.shape[0] == 9216 else None
        out[f"w{i}"], out[f"b{i}"] = to_torch(kernel, flat), saved[f"{prefix}{k}/bias"]
    names = (("gamma", "weight"), ("beta", "bias")) + (
        () if grads else (("moving_mean", "running_mean"), ("moving_variance", "running_var"))
    )
    for j, k in enumerate(norms):
        out.update({f"bn{j}.{ours}": saved[f"{prefix}{k}/{theirs}"] for theirs, ours in names})
    return out


def torch_tensors(model: nn.Module, grads: bool = False) -> dict[str, np.ndarray]:
    weighted, norms = layers(model)
    pick = (lambda p: p.grad) if grads else (lambda p: p)
    out = {}
    for i, m in enumerate(weighted):
        out[f"w{i}"], out[f"b{i}"] = pick(m.weight), pick(m.bias)
    for j, m in enumerate(norms):
        out[f"bn{j}.weight"], out[f"bn{j}.bias"] = pick(m.weight), pick(m.bias)
        if not grads:
            out[f"bn{j}.running_mean"], out[f"bn{j}.running_var"] = m.running_mean, m.running_var
    return {k: v.detach().contiguous().numpy().copy() for k, v in out.items()}


def load_keras(model: nn.Module, values: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        weighted, norms = layers(model)
        for i, m in enumerate(weighted):
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(values[f"w{i}"])))
            m.bias.copy_(torch.from_numpy(values[f"b{i}"]))
        for j, m in enumerate(norms):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(m, name).copy_(torch.from_numpy(values[f"bn{j}.{name}"]))


def differences(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict:
    """Per tensor: the max abs difference and that over the tensor's largest value in `theirs` (max rel);
    and the worst tensors."""
    per = {}
    for name, value in theirs.items():
        diff = float(np.abs(ours[name].astype(np.float64) - value).max())
        scale = float(np.abs(value).max()) or 1.0
        per[name] = {"max_abs": diff, "max_rel": diff / scale}
    worst_abs = max(per, key=lambda n: per[n]["max_abs"])
    worst_rel = max(per, key=lambda n: per[n]["max_rel"])
    return {
        "max_abs": per[worst_abs]["max_abs"],
        "max_abs_at": worst_abs,
        "max_rel": per[worst_rel]["max_rel"],
        "max_rel_at": worst_rel,
        "per_tensor": per,
    }


def init_distributions(saved, model: nn.Module) -> list[dict]:
    """Per weighted layer: mean and std of Keras's glorot_uniform draw and of cnnlab's own, and the std
    glorot_uniform has (limit sqrt(6 / (fan_in + fan_out)), std limit / sqrt(3))."""
    theirs = keras_tensors(saved, "init/")
    rows = []
    for i, m in enumerate(layers(model)[0]):
        w = m.weight.detach().numpy()
        fan_in = w[0].size
        fan_out = w.shape[0] * (w[0, 0].size if w.ndim == 4 else 1)
        rows.append(
            {
                "layer": f"w{i}",
                "shape": list(w.shape),
                "glorot_std": math.sqrt(2.0 / (fan_in + fan_out)),
                "keras_mean": float(theirs[f"w{i}"].mean()),
                "keras_std": float(theirs[f"w{i}"].std()),
                "cnnlab_mean": float(w.mean()),
                "cnnlab_std": float(w.std()),
            }
        )
    return rows


def preset_model(folder: str, images: int, steps: int):
    cfg = preset(
        "seed",
        data=folder,
        batch_size=images,
        epochs=steps,
        progress=False,
        precision="fp32",
        log="none",
        val_fraction=0.0,
    )  # the batch is all training
    ds = load_data(cfg)
    prep = preprocessing(cfg, ds)
    model = build_model(cfg, len(ds.classes), (256, 256), torch.device("cpu"))
    at_stored_size = upscale_in_model(model, cfg, prep)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # dropout off, as on the Keras side: the two draw different masks
    return cfg, ds, prep, model, at_stored_size


def manual_steps(model: nn.Module, cfg, inputs: torch.Tensor, labels: torch.Tensor, steps: int) -> dict:
    """train.py's step (fp32: no autocast) one at a time, keeping what the comparison reads."""
    optimizer = build_optimizer(model, cfg)
    model.train()
    kept = {"loss": []}
    for step in range(1, steps + 1):
        loss = F.cross_entropy(model(inputs).float(), labels, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step in (1, steps):
            kept[f"grad{step}"] = torch_tensors(model, grads=True)
        optimizer.step()
        kept["loss"].append(loss.item())
        if step in (1, steps):
            kept[f"step{step}"] = torch_tensors(model)
    return kept


def fp64_gradients(folder: str, start: dict, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The step-1 gradients in float64 (the 256x256 batch itself, not computed from the 32x32 images): the reference that says how
    far each side's fp32 gradients are from the exact ones."""
    _, _, _, model, _ = preset_model(folder, len(y), 1)
    load_keras(model, start)
    for m in model.modules():
        if hasattr(m, "upscale"):
            m.upscale = (1, 1)  # a plain convolution of the batch as given
    model.double().train()
    inputs = torch.from_numpy(x).permute(0, 3, 1, 2).double()
    F.cross_entropy(model(inputs), torch.from_numpy(y).long()).backward()
    return torch_tensors(model, grads=True)


def optimizer_only(folder: str, start: dict, keras_grads: dict, keras_after: dict) -> dict:
    """cnnlab's optimiser given Keras's own step-1 gradients, from the same weights: the weights after
    it against Keras's (the optimiser alone, without the gradients' fp32 differences)."""
    cfg, _, _, model, _ = preset_model(folder, 10, 1)
    load_keras(model, start)
    optimizer = build_optimizer(model, cfg)
    weighted, norms = layers(model)
    params = {f"w{i}": m.weight for i, m in enumerate(weighted)} | {f"b{i}": m.bias for i, m in enumerate(weighted)}
    for j, m in enumerate(norms):
        params |= {f"bn{j}.weight": m.weight, f"bn{j}.bias": m.bias}
    for name, p in params.items():
        p.grad = (
            torch.from_numpy(np.ascontiguousarray(keras_grads[name]))
            .to(p.dtype)
            .contiguous(memory_format=torch.channels_last if p.ndim == 4 else torch.contiguous_format)
        )
    optimizer.step()
    after = torch_tensors(model)
    return differences({k: after[k] for k in params}, {k: keras_after[k] for k in params})


def run_keras(python: str, folder: str, steps: int) -> str:
    out = os.path.join(folder, "keras.npz")
    keras = subprocess.run(
        [python, os.path.join(HERE, "keras_seed_exact.py"), os.path.join(folder, "train"), out, str(steps)],
        capture_output=True,
        text=True,
    )
    if keras.returncode:
        sys.exit(f"the Keras side failed:\n{keras.stdout[-800:]}{keras.stderr[-2000:]}")
    print(keras.stdout.strip().splitlines()[-1])
    return out


def exact(args: argparse.Namespace) -> None:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    per_class = max(1, args.batch_images // 10)
    folder = batch_folder(args.data, per_class)
    out = args.keras_npz or run_keras(args.keras_python, folder, args.steps)
    saved = np.load(out)
    cfg, ds, prep, model, at_stored_size = preset_model(folder, len(saved["y"]), args.steps)
    distributions = init_distributions(saved, model)
    load_keras(model, keras_tensors(saved, "init/"))
    loader = make_loader(ds.train, cfg, prep, torch.device("cpu"), training=False, at_stored_size=at_stored_size)
    inputs, labels = next(iter(loader))
    order = torch.argsort(labels, stable=True)  # Keras's order: by class, then file name
    inputs, labels = inputs[order], labels[order]
    if not np.array_equal(labels.numpy(), saved["y"]):
        sys.exit(f"labels differ: cnnlab {labels.tolist()} vs Keras {saved['y'].tolist()}")
    factor = 256 // inputs.shape[-1]
    upscaled = inputs.repeat_interleave(factor, 2).repeat_interleave(factor, 3)  # what the first layer computes from
    input_diff = float(np.abs(upscaled.permute(0, 2, 3, 1).numpy() - saved["x"]).max())
    start = {k: v.copy() for k, v in torch_tensors(model).items()}
    kept = manual_steps(model, cfg, inputs.contiguous(memory_format=torch.channels_last), labels, args.steps)
    results = {
        "images": len(labels),
        "steps": args.steps,
        "upscale_in_first_conv": bool(at_stored_size),
        "optimizer": type(build_optimizer(model, cfg)).__name__,
        "input_max_abs": input_diff,
        "loss": {
            "keras": saved["loss"].tolist(),
            "cnnlab": kept["loss"],
            "max_abs": float(np.abs(np.array(kept["loss"]) - saved["loss"]).max()),
        },
    }
    for stage in ("grad1", f"grad{args.steps}", "step1", f"step{args.steps}"):
        results[stage] = differences(kept[stage], keras_tensors(saved, f"{stage}/", grads=stage.startswith("grad")))
    reference = fp64_gradients(folder, start, saved["x"], saved["y"])
    results["grad1_vs_fp64"] = {
        "cnnlab": differences(kept["grad1"], reference),
        "keras": differences(keras_tensors(saved, "grad1/", grads=True), reference),
    }
    results["optimizer_only"] = optimizer_only(
        folder, start, keras_tensors(saved, "grad1/", grads=True), keras_tensors(saved, "step1/")
    )
    results["train_loop_vs_manual"] = train_loop_check(
        folder, len(labels), args.steps, start, kept[f"step{args.steps}"]
    )
    results["init_distributions"] = distributions
    report(results, args.steps)
    path = write_record(
        "seed_parity_exact",
        f"cnnlab seed preset vs Keras from the same weights: loss, gradients, "
        f"weights and BN moving statistics after 1 and {args.steps} Adam steps (fp32, dropout off)",
        results,
    )
    print(f"record: {path}")


def train_loop_check(folder: str, images: int, steps: int, start: dict, manual_end: dict) -> dict:
    """cnnlab.training.train from the same start for `steps` one-step epochs ends where the manual loop did
    (max abs difference of every tensor): the loop above is train's."""
    cfg, ds, prep, model, at_stored_size = preset_model(folder, images, steps)
    load_keras(model, start)
    loader = make_loader(ds.train, cfg, prep, torch.device("cpu"), training=True, at_stored_size=at_stored_size)
    train(model, loader, None, cfg, ds.classes)
    end = torch_tensors(model)
    return differences(end, manual_end)


def worst(d: dict) -> str:
    return f"max abs {d['max_abs']:.3g} ({d['max_abs_at']}), max rel {d['max_rel']:.3g} ({d['max_rel_at']})"


def report(results: dict, steps: int) -> None:
    print(f"inputs (cnnlab's loader, upscaled, vs Keras's): max abs {results['input_max_abs']:.3g}")
    print(f"loss per step: Keras {', '.join(f'{v:.6f}' for v in results['loss']['keras'])}")
    print(
        f"               cnnlab {', '.join(f'{v:.6f}' for v in results['loss']['cnnlab'])}"
        f"  (max abs {results['loss']['max_abs']:.3g})"
    )
    for stage in ("grad1", f"grad{steps}", "step1", f"step{steps}"):
        d = results[stage]
        print(f"{stage:>7}: {worst(d)}")
    for stage, d in (
        ("grad1 cnnlab vs fp64", results["grad1_vs_fp64"]["cnnlab"]),
        ("grad1 Keras vs fp64", results["grad1_vs_fp64"]["keras"]),
        ("optimiser alone, step 1", results["optimizer_only"]),
        (f"train() vs this loop, {steps} steps", results["train_loop_vs_manual"]),
    ):
        print(f"{stage}: {worst(d)}")
    print("initial weights (glorot_uniform): layer, std expected, Keras mean/std, cnnlab mean/std")
    for row in results["init_distributions"]:
        print(
            f"  {row['layer']:>3} {str(row['shape']):>20} {row['glorot_std']:.5f}  {row['keras_mean']:+.1e} "
            f"{row['keras_std']:.5f}  {row['cnnlab_mean']:+.1e} {row['cnnlab_std']:.5f}"
        )
