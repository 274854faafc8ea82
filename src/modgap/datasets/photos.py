"""A handful of real photographs bundled with scikit-image, with captions written for modgap.

The images come from ``skimage.data`` (public-domain or freely licensed photos that ship inside
the scikit-image wheel, so no download is needed). Each has two captions, written for this
project by looking at the picture; ``text_to_image`` pairs every caption with its photo.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import ModgapError

__all__ = ["PHOTO_CAPTIONS", "load_photos"]

#: skimage.data function name -> two captions
PHOTO_CAPTIONS: dict[str, tuple[str, str]] = {
    "astronaut": (
        "An astronaut in an orange spacesuit smiling, with an American flag behind her.",
        "Portrait of a woman astronaut next to her helmet and a model of the space shuttle.",
    ),
    "coffee": (
        "A cup of coffee on a red saucer with a spoon, on a wooden table.",
        "A red cup of espresso seen from above.",
    ),
    "chelsea": (
        "A tabby cat looking straight at the camera.",
        "Close-up of a cat's face with green eyes.",
    ),
    "rocket": (
        "A rocket standing on its launch pad at night, lit by floodlights.",
        "A space launch vehicle between towers before lift-off.",
    ),
    "camera": (
        "A black and white photo of a man with a camera on a tripod.",
        "A photographer in a coat standing in a field with his camera.",
    ),
    "coins": (
        "Old coins laid out in rows on a dark background.",
        "A greyscale picture of many round coins.",
    ),
    "clock": (
        "A small blurry clock on a grey background.",
        "A greyscale photo of a round clock, out of focus.",
    ),
    "hubble_deep_field": (
        "A deep space image full of distant galaxies.",
        "Many small bright galaxies scattered on a black sky.",
    ),
    "immunohistochemistry": (
        "A microscope image of stained tissue with brown and blue cells.",
        "Cells seen under a microscope after immunohistochemical staining.",
    ),
    "moon": (
        "The surface of the moon covered with craters.",
        "A greyscale picture of lunar craters.",
    ),
    "page": (
        "A photo of a printed page of text about image segmentation.",
        "A page from a book with a heading and a line of code.",
    ),
    "brick": (
        "A wall of grey bricks.",
        "Close-up texture of a brick wall.",
    ),
    "grass": (
        "A greyscale picture of grass seen from above.",
        "Texture of blades of grass.",
    ),
    "gravel": (
        "Small grey stones of gravel on the ground.",
        "Close-up texture of gravel.",
    ),
    "colorwheel": (
        "A colour wheel showing every hue in a circle.",
        "A rainbow of colours arranged around a disc.",
    ),
    "stereo_motorcycle": (
        "A red motorcycle parked in a workshop.",
        "A motorbike standing in a garage with shelves behind it.",
    ),
    "retina": (
        "A photograph of the back of a human eye showing blood vessels.",
        "A retinal fundus image with the optic disc.",
    ),
}


def _as_rgb(array: np.ndarray) -> Image.Image:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")


def load_photos(
    names: list[str] | None = None,
) -> tuple[list[Image.Image], list[str], np.ndarray, list[str]]:
    """Load the bundled photos.

    Returns
    -------
    images : list of PIL.Image (RGB)
    captions : list of str
        Two per image.
    text_to_image : ndarray of int64, shape (n_captions,)
        Row of the image each caption describes.
    names : list of str
        The ``skimage.data`` names of the images, in order.
    """
    try:
        import skimage.data
    except ImportError:
        raise ModgapError(
            "the demo photos need scikit-image: pip install 'modgap[encoders]'"
        ) from None
    names = list(PHOTO_CAPTIONS) if names is None else names
    images, captions, text_to_image = [], [], []
    for i, name in enumerate(names):
        if name not in PHOTO_CAPTIONS:
            raise ModgapError(f"unknown demo photo {name!r} (known: {', '.join(PHOTO_CAPTIONS)})")
        array = getattr(skimage.data, name)()
        if isinstance(array, tuple):  # stereo pairs: keep the left view
            array = array[0]
        images.append(_as_rgb(array))
        captions.extend(PHOTO_CAPTIONS[name])
        text_to_image.extend([i] * len(PHOTO_CAPTIONS[name]))
    return images, captions, np.asarray(text_to_image, dtype=np.int64), names
