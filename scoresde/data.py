"""Built-in data: toy 2-D sets, the 8x8 digits, 28x28 MNIST, and the quantisation convention of image data.

Re-exports only; every name is also at the top level (`ss.load_digits`).
"""

from ._data import (
    ImageData as ImageData,
    batches as batches,
    checkerboard as checkerboard,
    dequantize as dequantize,
    digit_images as digit_images,
    digit_levels as digit_levels,
    gaussian_mixture as gaussian_mixture,
    load_coloured_digits as load_coloured_digits,
    load_digits as load_digits,
    load_mnist as load_mnist,
    quantize as quantize,
    rings as rings,
    swiss_roll as swiss_roll,
    toy_mixture as toy_mixture,
    two_moons as two_moons,
)

__all__ = [
    "ImageData",
    "batches",
    "checkerboard",
    "dequantize",
    "digit_images",
    "digit_levels",
    "gaussian_mixture",
    "load_coloured_digits",
    "load_digits",
    "load_mnist",
    "quantize",
    "rings",
    "swiss_roll",
    "toy_mixture",
    "two_moons",
]
