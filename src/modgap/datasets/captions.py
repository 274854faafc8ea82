"""Captions for Fashion-MNIST images, built from class names, synonyms, attributes and templates.

Fashion-MNIST has labels, not captions. To train and evaluate an image-text model on it, each
image gets a caption drawn from a fixed vocabulary: a template (``"a product photo of {}."``)
filled with a noun phrase made of a synonym of the image's class and, sometimes, a tone
adjective read off the image's pixels (dark / light garment). The vocabulary is finite
(:func:`caption_vocabulary`), so its text features are computed once and cached; each image's
caption is an index into it, re-drawn every training epoch (a free augmentation).

Zero-shot prompts (:func:`class_prompts`) use the CLIP convention of ensembling several
templates per class name (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision", Sec. 3.1.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fashion_mnist import CLASS_NAMES

__all__ = [
    "CAPTION_TEMPLATES",
    "CLASS_SYNONYMS",
    "PROMPT_NAMES",
    "TONE_WORDS",
    "ZERO_SHOT_TEMPLATES",
    "CaptionVocabulary",
    "caption_vocabulary",
    "class_prompts",
    "image_tones",
    "sample_captions",
]

#: per class: (singular nouns, whether the item is spoken of as "a pair of ...")
CLASS_SYNONYMS: dict[str, tuple[tuple[str, ...], bool]] = {
    "t-shirt": (("t-shirt", "tee", "short-sleeved top", "crew-neck t-shirt"), False),
    "trouser": (("trousers", "pants", "jeans", "slacks"), True),
    "pullover": (("pullover", "sweater", "jumper", "knitted sweater"), False),
    "dress": (("dress", "summer dress", "sleeveless dress", "frock"), False),
    "coat": (("coat", "jacket", "overcoat", "winter coat"), False),
    "sandal": (("sandal", "strappy sandal", "open-toe sandal", "summer sandal"), False),
    "shirt": (("shirt", "button-up shirt", "blouse", "long-sleeved shirt"), False),
    "sneaker": (("sneaker", "trainer", "running shoe", "sports shoe"), False),
    "bag": (("bag", "handbag", "purse", "tote bag"), False),
    "ankle boot": (("ankle boot", "boot", "short boot", "heeled ankle boot"), False),
}

#: class names as they read in a zero-shot prompt ("a photo of a {}.")
PROMPT_NAMES: tuple[str, ...] = tuple(
    {"trouser": "pair of trousers"}.get(name, name) for name in CLASS_NAMES
)

#: tone id -> adjectives; 0 = no adjective, 1 = dark garment, 2 = light garment
TONE_WORDS: tuple[tuple[str, ...], ...] = ((), ("dark", "black"), ("light", "white", "pale"))

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a product photo of {}.",
    "a catalogue picture of {}.",
    "{} on a plain background.",
    "a small greyscale image of {}.",
    "a low-resolution photo of {}.",
    "an online shop listing showing {}.",
    "this is {}.",
    "{} for sale.",
    "a picture of {}, seen from the front.",
    "a blurry thumbnail of {}.",
    "a black and white photo of {}.",
    "{}, photographed on its own.",
    "an item of clothing: {}.",
    "a fashion photo of {}.",
    "a close-up of {}.",
)

ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a product photo of a {}.",
    "a low-resolution photo of a {}.",
    "a black and white photo of a {}.",
    "a picture of the {}.",
    "an image of a {}.",
    "a {} for sale.",
    "a fashion photo of a {}.",
)

#: grey levels separating dark (above) / light (below) garments; Fashion-MNIST stores
#: negated intensities, so a dark garment has high values. Chosen at roughly the 75th and
#: 20th percentiles of the foreground mean over the training split.
_DARK_ABOVE, _LIGHT_BELOW, _FOREGROUND = 190.0, 125.0, 20


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(noun: str, adjective: str, pair: bool) -> str:
    words = f"{adjective} {noun}" if adjective else noun
    return f"a pair of {words}" if pair else _article(words)


@dataclass(frozen=True)
class CaptionVocabulary:
    """Every caption the generator can produce, with the class and tone each one describes."""

    texts: tuple[str, ...]
    labels: np.ndarray  # (n,) class id
    tones: np.ndarray  # (n,) tone id, 0 = no tone word

    def __len__(self) -> int:
        return len(self.texts)

    def candidates(self, label: int, tone: int) -> np.ndarray:
        """Indices of the captions that fit an image of class ``label`` and tone ``tone``."""
        ok = (self.labels == label) & ((self.tones == 0) | (self.tones == tone))
        return np.flatnonzero(ok)


def caption_vocabulary(templates: tuple[str, ...] = CAPTION_TEMPLATES) -> CaptionVocabulary:
    """All captions: template x class synonym x tone adjective (none included), in a fixed order."""
    texts, labels, tones = [], [], []
    for label, name in enumerate(CLASS_NAMES):
        nouns, pair = CLASS_SYNONYMS[name]
        for tone, adjectives in enumerate(TONE_WORDS):
            for adjective in adjectives or ("",):
                for noun in nouns:
                    phrase = _noun_phrase(noun, adjective, pair)
                    for template in templates:
                        text = template.format(phrase)
                        texts.append(text[0].upper() + text[1:])
                        labels.append(label)
                        tones.append(tone)
    return CaptionVocabulary(tuple(texts), np.asarray(labels), np.asarray(tones))


def image_tones(images: np.ndarray) -> np.ndarray:
    """Tone id per Fashion-MNIST image (1 dark, 2 light, 0 neither) from its foreground pixels."""
    images = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    foreground = images > _FOREGROUND
    counts = np.maximum(foreground.sum(1), 1)
    mean = (images * foreground).sum(1) / counts
    tones = np.zeros(len(images), dtype=np.int64)
    tones[mean > _DARK_ABOVE] = 1
    tones[mean < _LIGHT_BELOW] = 2
    tones[~foreground.any(1)] = 0  # blank image: no tone to speak of
    return tones


def sample_captions(
    labels: np.ndarray,
    tones: np.ndarray,
    vocabulary: CaptionVocabulary,
    rng: np.random.Generator | int = 0,
) -> np.ndarray:
    """One caption index per image, drawn uniformly among the captions that fit it."""
    rng = np.random.default_rng(rng)
    labels, tones = np.asarray(labels), np.asarray(tones)
    out = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        for tone in np.unique(tones[labels == label]):
            rows = np.flatnonzero((labels == label) & (tones == tone))
            pool = vocabulary.candidates(int(label), int(tone))
            out[rows] = rng.choice(pool, size=len(rows))
    return out


def class_prompts(
    class_names: tuple[str, ...] = PROMPT_NAMES, templates: tuple[str, ...] = ZERO_SHOT_TEMPLATES
) -> list[list[str]]:
    """Zero-shot prompts: for each class, every template filled with the class name."""
    return [[t.format(name) for t in templates] for name in class_names]
