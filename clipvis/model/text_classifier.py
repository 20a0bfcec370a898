"""Open-vocabulary classifier from CLIP text embeddings (docs/method.md §5).

Each class name is split on commas into synonyms; each synonym is embedded with the 14 ViLD
templates (L2-normalised, averaged, L2-normalised again); a class's logit is the best of its synonyms.
Embeddings are cached in files named by a hash of everything they depend on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipvis.errors import InputError
from clipvis.files import atomic_path
from clipvis.model.clip_encoder import FrozenCLIP

log = logging.getLogger(__name__)

# The 14 ViLD-style templates of the reference; numbers 2-5 have no final period.
TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)
CHUNK_SIZE = 128  # prompts encoded at once
MAX_LOGIT_SCALE = 100.0


@dataclass
class TextEmbeddings:
    """A vocabulary's classifier: unit-norm rows, one per synonym, and the class of each synonym."""

    embeddings: torch.Tensor  # (S, D)
    synonym_class: torch.Tensor  # (S,) int64, class index of each row
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def split_synonyms(class_names: list[str]) -> tuple[list[str], list[int]]:
    """Synonyms of every class (comma-separated; ", " counts as ","), and each synonym's class index.

    Underscores, parentheses and case are kept verbatim, as in the reference.
    """
    synonyms, synonym_class = [], []
    for index, name in enumerate(class_names):
        for synonym in name.replace(", ", ",").split(","):
            if not synonym.strip():
                raise InputError("vocabulary", f"[{index}]", f"empty synonym in class name {name!r}")
            synonyms.append(synonym)
            synonym_class.append(index)
    return synonyms, synonym_class


def encode_prompts(clip: FrozenCLIP, prompts: list[str], chunk_size: int = CHUNK_SIZE) -> torch.Tensor:
    """(N,) prompts -> (N, D) unnormalised text embeddings, `chunk_size` prompts at a time.

    Each chunk's tokens are cut to its longest prompt (end token included); see FrozenCLIP.encode_text.
    """
    device = clip.pixel_mean.device
    out = []
    for start in tqdm(range(0, len(prompts), chunk_size), desc="text embeddings", unit="chunk",
                      disable=len(prompts) <= chunk_size):
        tokens = clip.tokenizer(prompts[start:start + chunk_size])  # (n, context_length), zero-padded
        length = int(tokens.argmax(dim=-1).max()) + 1  # the end token has the largest id
        out.append(clip.encode_text(tokens[:, :length].to(device)))
    return torch.cat(out)


def class_text_embeddings(clip: FrozenCLIP, class_names: list[str]) -> TextEmbeddings:
    """Embed every synonym with the 14 templates: normalise, average over templates, normalise."""
    if not class_names:
        raise InputError("vocabulary", "", "no class names")
    synonyms, synonym_class = split_synonyms(class_names)
    prompts = [template.format(synonym) for synonym in synonyms for template in TEMPLATES]
    per_prompt = F.normalize(encode_prompts(clip, prompts), dim=-1)  # (S * 14, D)
    per_synonym = per_prompt.view(len(synonyms), len(TEMPLATES), -1).mean(dim=1)
    return TextEmbeddings(F.normalize(per_synonym, dim=-1), torch.tensor(synonym_class), list(class_names))


def text_cache_path(clip: FrozenCLIP, class_names: list[str], cache_dir: str | Path) -> Path:
    """The cache file for this CLIP (name and weights), vocabulary and template list."""
    key = json.dumps([clip.model_name, clip.weights_id, list(class_names), list(TEMPLATES)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(cache_dir) / f"text_{clip.model_name}_{digest}.pt"


def text_embeddings(clip: FrozenCLIP, class_names: list[str], cache_dir: str | Path | None) -> TextEmbeddings:
    """Text embeddings of a vocabulary, loaded from `cache_dir` if cached there, else computed and saved.

    With `cache_dir` None nothing is cached.
    """
    if cache_dir is None:
        return class_text_embeddings(clip, class_names)
    path = text_cache_path(clip, class_names, cache_dir)
    if path.exists():
        log.info("text embeddings from %s", path)
        saved = torch.load(path, map_location=clip.pixel_mean.device, weights_only=True)
        return TextEmbeddings(saved["embeddings"], saved["synonym_class"], saved["class_names"])
    result = class_text_embeddings(clip, class_names)
    with atomic_path(path) as tmp:
        torch.save({"embeddings": result.embeddings.cpu(), "synonym_class": result.synonym_class,
                    "class_names": result.class_names, "model_name": clip.model_name,
                    "weights_id": clip.weights_id, "templates": list(TEMPLATES)}, tmp)
    log.info("text embeddings saved to %s", path)
    return result


def inference_text_embeddings(clip: FrozenCLIP, class_names: list[str], cache_dir: str | Path | None) -> TextEmbeddings:
    """`text_embeddings`, then the CLIP's text tower freed (`FrozenCLIP.drop_text_tower`): inference
    classifies with the embeddings alone, and its frames reuse that memory."""
    text = text_embeddings(clip, class_names, cache_dir)
    clip.drop_text_tower()
    return text


def classification_logits(visual: torch.Tensor, text: torch.Tensor, synonym_class: torch.Tensor,
                          num_classes: int, logit_scale: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(..., D) visual embeddings -> (..., num_classes) logits.

    min(exp(logit_scale), 100) * cosine similarity to each synonym, then the max over each class's
    synonyms. Where `valid` (...) is False the logits are 0 (a uniform softmax), as the reference does
    for empty masks.
    """
    scale = min(math.exp(float(logit_scale)), MAX_LOGIT_SCALE)
    per_synonym = scale * F.normalize(visual, dim=-1) @ text.to(visual.dtype).T  # (..., S)
    index = synonym_class.to(per_synonym.device).expand_as(per_synonym)
    logits = per_synonym.new_full((*per_synonym.shape[:-1], num_classes), float("-inf"))
    logits = logits.scatter_reduce(-1, index, per_synonym, reduce="amax")
    if valid is not None:
        logits = logits.masked_fill(~valid.unsqueeze(-1), 0.0)
    return logits
