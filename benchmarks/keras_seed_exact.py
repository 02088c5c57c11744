"""The Keras side of benchmarks/seed_parity.py's exact comparison; runs in the Keras environment
(../shared/peers/keras_seed_study.py's header), not cnnlab's.

    keras-venv/bin/python benchmarks/keras_seed_exact.py FOLDER OUT.npz [STEPS] [SEED]

Builds the study's model (the same layers as the study's script) with dropout off, reads every image of
FOLDER/<class>/ as flow_from_directory does (PIL, nearest upscale to 256x256, x 1/255; classes sorted), and
takes STEPS Adam steps (Keras's defaults, as compile(optimizer="adam") makes them) on that one batch.
Saves to OUT.npz: the batch (x NHWC, y), the initial weights, and after steps 1 and STEPS the loss,
the gradients (of the step's loss, before its update), the weights and the BN moving statistics.
Weights are keyed "<layer index>/<variable>", layer indices counting the Sequential's layers.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from tf_keras.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPooling2D  # noqa: E402
from tf_keras.models import Sequential  # noqa: E402


def study_model(classes: int, dropout: float) -> Sequential:
    m = Sequential()
    m.add(Conv2D(96, (11, 11), strides=(4, 4), padding="valid", activation="relu", input_shape=(256, 256, 3)))
    m.add(BatchNormalization())
    m.add(MaxPooling2D(pool_size=(3, 3), strides=(2, 2)))
    m.add(Conv2D(256, (5, 5), padding="same", activation="relu"))
    m.add(BatchNormalization())
    m.add(MaxPooling2D(pool_size=(3, 3), strides=(2, 2)))
    m.add(Conv2D(384, (3, 3), padding="same", activation="relu"))
    m.add(Conv2D(384, (3, 3), padding="same", activation="relu"))
    m.add(Conv2D(256, (3, 3), padding="same", activation="relu"))
    m.add(MaxPooling2D(pool_size=(3, 3), strides=(2, 2)))
    m.add(Flatten())
    for units in (512, 256, 128):
        m.add(Dense(units, activation="relu"))
        m.add(BatchNormalization())
        m.add(Dropout(dropout))
    m.add(Dense(classes, activation="softmax"))
    return m


def batch(folder: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    classes = sorted(os.listdir(folder))
    images, labels = [], []
    for index, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(folder, name))):
            img = keras.utils.load_img(
                os.path.join(folder, name, file), target_size=(256, 256), interpolation="nearest"
            )
            images.append(keras.utils.img_to_array(img, dtype="float32") * np.float32(1.0 / 255))
            labels.append(index)
    return np.stack(images), np.array(labels), classes


def weights(model: Sequential, prefix: str, values=None) -> dict:
    out = {}
    for index, layer in enumerate(model.layers):
        for variable in layer.weights:
            short = variable.name.split("/")[-1].split(":")[0]
            out[f"{prefix}{index}/{short}"] = variable.numpy()
    return out


def main() -> None:
    folder, out = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    keras.utils.set_random_seed(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    x, y, classes = batch(folder)
    model = study_model(len(classes), dropout=0.0)
    optimizer = keras.optimizers.Adam()  # what compile(optimizer="adam") builds
    loss_fn = keras.losses.CategoricalCrossentropy()
    onehot = tf.one_hot(y, len(classes))
    saved = {"x": x, "y": y, **weights(model, "init/")}
    names = [
        f"{model.layers.index(layer)}/{v.name.split('/')[-1].split(':')[0]}"
        for layer in model.layers
        for v in layer.trainable_weights
    ]
    losses = []
    for step in range(1, steps + 1):
        with tf.GradientTape() as tape:
            loss = loss_fn(onehot, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(grads, model.trainable_weights))
        losses.append(float(loss))
        if step in (1, steps):
            saved.update({f"grad{step}/{name}": g.numpy() for name, g in zip(names, grads)})
            saved.update(weights(model, f"step{step}/"))
    saved["loss"] = np.array(losses, dtype=np.float64)
    np.savez(out, **saved)
    print(f"keras: {steps} steps, losses {', '.join(f'{v:.6f}' for v in losses)}", flush=True)


if __name__ == "__main__":
    main()
