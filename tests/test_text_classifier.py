import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from clipvis.errors import InputError
from clipvis.commands import embed as embed_command
from clipvis.model import text_classifier
from clipvis.model.clip_encoder import FrozenCLIP
from clipvis.model.text_classifier import (TEMPLATES, class_text_embeddings, classification_logits,
                                           encode_prompts, inference_text_embeddings, split_synonyms,
                                           text_embeddings)


@pytest.fixture(scope="module")
def clip() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP("clipvis_toy_rn", None)


def test_templates_are_the_fourteen_vild_templates():
    assert len(TEMPLATES) == 14
    assert TEMPLATES[0].format("cat") == "a photo of a cat."
    # Numbers 2-5 have no final period (the facts' note says 2-4, but its list and ViLD's have 5 too).
    assert [t.format("cat") for t in TEMPLATES[1:5]] == [
        "This is a photo of a cat", "There is a cat in the scene", "There is the cat in the scene",
        "a photo of a cat in the scene"]
    assert TEMPLATES[13].format("cat") == "There is a large cat in the scene."
    assert all(t.endswith(".") for t in TEMPLATES[5:])


def test_class_names_split_into_synonyms_verbatim():
    synonyms, classes = split_synonyms(["bat_(animal)", "car, automobile,auto", "Giant_panda"])
    assert synonyms == ["bat_(animal)", "car", "automobile", "auto", "Giant_panda"]
    assert classes == [0, 1, 1, 1, 2]
    with pytest.raises(InputError, match=r"\[1\]"):
        split_synonyms(["cat", "dog,"])


def test_truncated_tokens_give_the_full_length_embeddings(clip):
    prompts = ["a photo of a cat.", "There is a large bat_(animal) in the scene.", "dog"]
    tokens = clip.tokenizer(prompts)  # (3, 77)
    length = int(tokens.argmax(-1).max()) + 1
    assert length < tokens.shape[1]
    full = clip.clip.encode_text(tokens)  # open_clip's own encoder, all 77 positions
    assert torch.allclose(clip.encode_text(tokens[:, :length]), full, atol=1e-5)
    # Chunks of different longest prompts agree with one big chunk.
    assert torch.allclose(encode_prompts(clip, prompts, chunk_size=1), full, atol=1e-5)


def test_synonym_embedding_is_normalised_mean_of_normalised_prompts(clip):
    result = class_text_embeddings(clip, ["cat", "dog, puppy"])
    assert result.embeddings.shape == (3, clip.embed_dim)
    assert torch.equal(result.synonym_class, torch.tensor([0, 1, 1]))
    assert torch.allclose(result.embeddings.norm(dim=-1), torch.ones(3), atol=1e-6)

    prompts = [template.format("puppy") for template in TEMPLATES]
    per_prompt = F.normalize(clip.clip.encode_text(clip.tokenizer(prompts)), dim=-1)
    expected = F.normalize(per_prompt.mean(0), dim=0)
    assert torch.allclose(result.embeddings[2], expected, atol=1e-5)


def test_logits_scale_capped_at_100_and_max_over_synonyms():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # class 0: row 0; class 1: rows 1 and 2
    synonym_class = torch.tensor([0, 1, 1])
    visual = torch.tensor([[3.0, 0.0], [0.0, 2.0], [4.0, 3.0]])  # normalised: (1,0), (0,1), (0.8,0.6)

    logits = classification_logits(visual, text, synonym_class, 2, math.log(10.0))
    expected = torch.tensor([[1.0, 0.6], [0.0, 1.0], [0.8, 0.96]]) * 10
    assert torch.allclose(logits, expected, atol=1e-5)

    capped = classification_logits(visual, text, synonym_class, 2, math.log(1000.0))
    assert torch.allclose(capped, expected * 10, atol=1e-4)

    batched = classification_logits(visual.view(1, 3, 2), text, synonym_class, 2, math.log(10.0),
                                     valid=torch.tensor([[True, False, True]]))
    assert torch.allclose(batched[0, [0, 2]], expected[[0, 2]], atol=1e-5)
    assert torch.equal(batched[0, 1], torch.zeros(2))


def test_cache_is_reused_and_keyed_by_vocabulary(clip, tmp_path, monkeypatch):
    first = text_embeddings(clip, ["cat", "dog"], tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1

    def must_not_compute(*args):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(text_classifier, "class_text_embeddings", must_not_compute)
    again = text_embeddings(clip, ["cat", "dog"], tmp_path)
    assert torch.equal(again.embeddings, first.embeddings)
    assert torch.equal(again.synonym_class, first.synonym_class) and again.class_names == ["cat", "dog"]
    monkeypatch.undo()

    text_embeddings(clip, ["cat", "dog", "bird"], tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_inference_drops_the_text_tower_after_embedding_and_keeps_the_image_side(tmp_path):
    torch.manual_seed(0)
    clip = FrozenCLIP("clipvis_toy_rn", None)
    weights_id = clip.weights_id
    images = torch.randn(1, 3, 64, 64)
    features = clip.features(images)
    expected = text_embeddings(clip, ["cat", "dog"], None)
    parameters = sum(p.numel() for p in clip.parameters())
    text_weights = sum(p.numel() for name, p in clip.clip.named_parameters()
                       if not name.startswith("visual.") and name != "logit_scale")

    got = inference_text_embeddings(clip, ["cat", "dog"], tmp_path)
    assert torch.equal(got.embeddings, expected.embeddings)
    assert sum(p.numel() for p in clip.parameters()) == parameters - text_weights
    assert clip.weights_id == weights_id  # the cache key of the whole CLIP, still
    assert clip.embed_dim == expected.embeddings.shape[1] and clip.logit_scale > 0
    assert all(torch.equal(a, b) for a, b in zip(clip.features(images).values(), features.values()))
    with pytest.raises(RuntimeError, match="text tower was dropped"):
        class_text_embeddings(clip, ["bird"])
    assert torch.equal(text_embeddings(clip, ["cat", "dog"], tmp_path).embeddings, expected.embeddings)  # cached


def run_embed(argv: list[str], capsys) -> str:
    parser = argparse.ArgumentParser()
    embed_command.add_arguments(parser)
    torch.manual_seed(0)  # random toy weights: the same seed gives the same weights, hence the same cache file
    assert embed_command.main(parser.parse_args(argv)) == 0
    return capsys.readouterr().out.strip()


def test_embed_command_writes_then_reuses_cache_file(tmp_path, capsys):
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("cat\n\ndog, puppy\n")
    out_dir = tmp_path / "cache"
    common = ["--clip", "clipvis_toy_rn", "--out-dir", str(out_dir)]
    path = run_embed(common + ["--vocab-file", str(vocab_file)], capsys)
    saved = torch.load(path, weights_only=True)
    assert saved["class_names"] == ["cat", "dog, puppy"] and saved["embeddings"].shape[0] == 3

    assert run_embed(common + ["--vocab-file", str(vocab_file)], capsys) == path
    assert run_embed(common + ["--vocab", "cat, dog"], capsys) != path
    assert len(list(out_dir.glob("*.pt"))) == 2


def test_embed_command_reads_a_benchmark_vocabulary(tmp_path, capsys):
    path = run_embed(["--clip", "clipvis_toy_rn", "--benchmark", "ytvis19_val", "--out-dir", str(tmp_path)], capsys)
    saved = torch.load(path, weights_only=True)
    assert len(saved["class_names"]) == 40 and "giant_panda" in saved["class_names"]


def test_embed_command_rejects_empty_vocabulary(tmp_path):
    parser = argparse.ArgumentParser()
    embed_command.add_arguments(parser)
    args = parser.parse_args(["--clip", "clipvis_toy_rn", "--vocab", " , ", "--out-dir", str(tmp_path)])
    with pytest.raises(InputError, match="empty vocabulary"):
        embed_command.main(args)
