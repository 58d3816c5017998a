#!/usr/bin/env python3
"""The seed notebook as a script (typos fixed: img_rows), for a like-for-like time and accuracy
next to `edgefashion train`. Input: the seed's CSV files (tools/idx_to_csv.py writes them)."""

import argparse
import time

import numpy as np
from tensorflow import keras
from tensorflow.keras.layers import Conv2D, Dense, Flatten
from tensorflow.keras.models import Sequential

img_rows, img_cols = 28, 28
num_classes = 10


def prep_data(raw):
    y = raw[:, 0]
    out_y = keras.utils.to_categorical(y, num_classes)
    x = raw[:, 1:]
    num_images = raw.shape[0]
    out_x = x.reshape(num_images, img_rows, img_cols, 1)
    out_x = out_x / 255
    return out_x, out_y


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("train_csv")
    parser.add_argument("test_csv")
    args = parser.parse_args()
    t0 = time.perf_counter()
    x, y = prep_data(np.loadtxt(args.train_csv, skiprows=1, delimiter=","))
    print(f"loadtxt + prep: {time.perf_counter() - t0:.1f} s")
    fashion_model = Sequential()
    fashion_model.add(Conv2D(kernel_size=3, filters=12, activation="relu", input_shape=(img_rows, img_cols, 1)))
    fashion_model.add(Conv2D(20, activation="relu", kernel_size=3))
    fashion_model.add(Conv2D(20, activation="relu", kernel_size=3))
    fashion_model.add(Flatten())
    fashion_model.add(Dense(100, activation="relu"))
    fashion_model.add(Dense(num_classes, activation="softmax"))
    fashion_model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    history = fashion_model.fit(x, y, batch_size=100, epochs=4, validation_split=0.2, verbose=2)
    fit = time.perf_counter() - t0
    tx, ty = prep_data(np.loadtxt(args.test_csv, skiprows=1, delimiter=","))
    _, test_accuracy = fashion_model.evaluate(tx, ty, verbose=0)
    print(f"fit {fit:.1f} s, val_accuracy {history.history['val_accuracy'][-1]:.4f}, "
          f"test accuracy {test_accuracy:.4f}")


if __name__ == "__main__":
    main()
