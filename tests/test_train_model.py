"""Matching model parts (GPO, pooling, encoders) and training data (precomp layout, splits,
epoch order, class-level retrieval) against plain references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modgap.embeddings import FeatureSet
from modgap.errors import InputError, ModgapError
from modgap.io.precomp import Vocabulary, load_precomp, tokenize, write_toy_precomp
from modgap.train.data import epoch_order, split_images
from modgap.train.evaluate import class_retrieval_metrics
from modgap.train.model import GPO, FeatureEncoder, WordGRUEncoder, pool_features


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- pooling ------------------------------------------------------------------------------------


def test_gpo_weights_are_a_distribution_over_valid_positions():
    gpo = GPO()
    lengths = torch.tensor([1, 3, 5, 3])
    w = gpo.weights(lengths, 5)[..., 0]
    assert torch.allclose(w.sum(1), torch.ones(4))
    for i, n in enumerate(lengths.tolist()):
        assert (w[i, n:] == 0).all()
    assert torch.equal(w[1], w[3])  # depends only on the length


def test_gpo_matches_sorted_weighted_sum_and_ignores_padding():
    torch.manual_seed(0)
    gpo = GPO()
    x = torch.randn(2, 6, 4)
    lengths = torch.tensor([6, 4])
    got = gpo(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        w = gpo.weights(torch.tensor([n]), n)[0, :, 0]
        ref = (x[i, :n].sort(0, descending=True).values * w[:, None]).sum(0)
        assert torch.allclose(got[i], ref, atol=1e-6)
    # values in padded positions do not matter
    x2 = x.clone()
    x2[1, 4:] = 1e3
    assert torch.allclose(gpo(x2, lengths), got)


def test_mean_max_pooling_reference():
    x = torch.randn(3, 5, 2)
    lengths = torch.tensor([5, 2, 1])
    mean, mx = pool_features(x, lengths, "mean"), pool_features(x, lengths, "max")
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(mean[i], x[i, :n].mean(0))
        assert torch.equal(mx[i], x[i, :n].max(0).values)
    with pytest.raises(ModgapError, match=r"unknown pooling 'sum'"):
        pool_features(x, lengths, "sum")


# -- encoders ------------------------------------------------------------------------------------


def test_feature_encoder_identity_init_and_shapes():
    x = torch.nn.functional.normalize(torch.randn(7, 12), dim=1)
    enc = FeatureEncoder(12, 12, head="mlp", identity_init=True)
    assert torch.allclose(enc(x), x, atol=1e-6)
    regions = FeatureEncoder(12, 5, pooling="gpo")
    out = regions(torch.randn(4, 9, 12))
    assert out.shape == (4, 5) and torch.allclose(out.norm(dim=1), torch.ones(4))
    with pytest.raises(ModgapError, match=r"identity_init needs the feature width"):
        FeatureEncoder(12, 8, identity_init=True)


def test_word_gru_is_independent_of_padding_and_batchmates():
    torch.manual_seed(0)
    enc = WordGRUEncoder(vocab_size=20, joint_dim=6, word_dim=4, pooling="gpo").eval()
    ids = torch.tensor([[3, 4, 5, 0, 0], [7, 8, 9, 10, 11]])
    lengths = torch.tensor([3, 5])
    both = enc(ids, lengths)
    alone = enc(ids[:1, :3], lengths[:1])
    assert torch.allclose(both[0], alone[0], atol=1e-6)


# -- data --------------------------------------------------------------------------------------


def test_vocabulary_and_tokenize():
    assert tokenize("A dog's ball, near 2 cats!") == ["a", "dog's", "ball", "near", "2", "cats"]
    v = Vocabulary.build(["a dog", "a cat", "the dog"], min_count=2)
    assert v.words == ["<pad>", "<unk>", "a", "dog"]
    ids, lengths = v.encode(["a dog runs", ""])
    assert ids.tolist() == [[2, 3, 1], [1, 0, 0]] and lengths.tolist() == [3, 1]
    assert Vocabulary.from_json(v.to_json()).words == v.words


def test_load_precomp_layout(tmp_path):
    root = write_toy_precomp(tmp_path / "p", {"train": 6, "test": 3}, regions=2, dim=4)
    train = load_precomp(root, "train")
    assert train.images.shape == (6, 2, 4) and train.n_texts == 30
    assert train.text_to_image.tolist() == [i // 5 for i in range(30)]
    assert train.text_kind == "ids"
    test = load_precomp(root, "test", train.metadata["vocab"])
    assert test.metadata["vocab"] is train.metadata["vocab"]
    np.save(root / "bad_ims.npy", np.ones((2, 3), dtype=np.float32))
    (root / "bad_caps.txt").write_text("a\nb\nc\n")
    with pytest.raises(InputError, match=r"3 captions for 2 images"):
        load_precomp(root, "bad")
    np.save(root / "int_ims.npy", np.ones((1, 3), dtype=np.int64))
    (root / "int_caps.txt").write_text("a\n" * 5)
    with pytest.raises(InputError, match=r"must be float"):
        load_precomp(root, "int")


def test_subset_keeps_captions_with_their_images():
    d = FeatureSet(
        images=np.arange(4, dtype=np.float32)[:, None],
        texts=np.arange(8, dtype=np.float32)[:, None],
        text_to_image=np.array([0, 0, 1, 1, 2, 2, 3, 3]),
        labels=np.array([0, 1, 0, 1]),
    )
    s = d.subset([3, 1])
    assert s.images[:, 0].tolist() == [3, 1]
    assert s.texts[:, 0].tolist() == [6, 7, 2, 3]
    assert s.text_to_image.tolist() == [0, 0, 1, 1] and s.labels.tolist() == [1, 1]


def test_split_images_and_folds_partition():
    tr, va, te = split_images(100, val=10, test=0.2, seed=1)
    assert (tr.size, va.size, te.size) == (70, 10, 20)
    assert np.union1d(np.union1d(tr, va), te).size == 100
    tests = [split_images(100, 5, 0, seed=0, folds=5, fold=f)[2] for f in range(5)]
    assert np.sort(np.concatenate(tests)).tolist() == list(range(100))
    with pytest.raises(ModgapError, match=r"cannot carve 90 validation images"):
        split_images(100, val=90, test=20)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = epoch_order(50, 3, 2)
    assert np.array_equal(a, epoch_order(50, 3, 2))
    assert not np.array_equal(a, epoch_order(50, 3, 1))
    assert np.sort(a).tolist() == list(range(50))


# -- class-level retrieval ----------------------------------------------------------------------


def test_class_retrieval_matches_loop_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 5)).astype(np.float32)
    y = rng.standard_normal((40, 5)).astype(np.float32)
    li, lt = rng.integers(0, 4, 30), rng.integers(0, 4, 40)
    got = class_retrieval_metrics(x, y, li, lt, block_size=7)

    def ranks(q, c, lq, lc):
        out, aps = [], []
        for i in range(len(q)):
            s = c @ q[i]
            rel = lc == lq[i]
            best = s[rel].max()
            out.append(1 + int(((s > best) & ~rel).sum()))
            order = sorted(range(len(c)), key=lambda j: (-s[j], j))
            hits, ap = 0, 0.0
            for r, j in enumerate(order, 1):
                if rel[j]:
                    hits += 1
                    ap += hits / r
            aps.append(ap / rel.sum())
        return np.array(out), np.mean(aps)

    r_i2t, ap_i2t = ranks(x, y, li, lt)
    r_t2i, ap_t2i = ranks(y, x, lt, li)
    for k in (1, 5, 10):
        assert got[f"text_retrieval_recall@{k}"] == pytest.approx(np.mean(r_i2t <= k))
        assert got[f"image_retrieval_recall@{k}"] == pytest.approx(np.mean(r_t2i <= k))
    assert got["class_map_i2t"] == pytest.approx(ap_i2t, rel=1e-5)
    assert got["class_map_t2i"] == pytest.approx(ap_t2i, rel=1e-5)
    assert got["rsum"] == pytest.approx(
        100 * sum(np.mean(r <= k) for r in (r_i2t, r_t2i) for k in (1, 5, 10))
    )


def test_frozen_side_is_not_trained():
    from modgap.train.model import MatchingModel

    torch.manual_seed(0)
    model = MatchingModel(FeatureEncoder(6, 4), FeatureEncoder(5, 4), freeze_image=True)
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    v, t = model(torch.randn(8, 6), torch.randn(8, 5))
    (v @ t.T).diagonal().sum().neg().backward()
    opt.step()
    after = model.image_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.text_encoder.parameters())
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
