"""``benchmarks/fuse_compare.py``: per-episode sums and the statistics built from them."""

from types import SimpleNamespace

import numpy as np
import pytest

from pewm.eval.metrics import depth_absrel, mse, psnr


@pytest.fixture(scope="module")
def fc(load_benchmark):
    return load_benchmark("fuse_compare")


def _episode(seed, cut=3, n=4, revisit=(True, False, True, False)):
    rng = np.random.default_rng(seed)
    T = cut + 1 + n
    return SimpleNamespace(cut=cut, frames_rgb=rng.integers(0, 256, (T, 12, 12, 3), dtype=np.uint8),
                           frames_depth=(1 + rng.random((T, 12, 12))).astype(np.float32), revisit=np.array(revisit),
                           poses=np.stack([np.eye(4)] * T))


def _generated(e, seed):
    rng = np.random.default_rng(seed)
    n = len(e.revisit)
    return {"rgb": rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8),
            "depth": (1 + rng.random((n, 12, 12))).astype(np.float32)}


def test_point_statistics_are_the_class_means_over_frames(fc):
    eps = [_episode(0), _episode(1, revisit=(False, False, False, True))]
    gen = [_generated(e, 10 + i) for i, e in enumerate(eps)]
    t = fc.episode_table(eps, gen)
    stats = fc.statistics([t], np.ones((1, 2)))
    for j, want_rev in enumerate((False, True)):  # column 0 novel, 1 revisit
        p, m, a = [], [], []
        for e, g in zip(eps, gen):
            gt = e.frames_rgb[e.cut + 1:]
            sel = e.revisit == want_rev
            p += list(psnr(g["rgb"], gt)[sel])
            m += list(mse(g["rgb"], gt)[sel])
            a += list(depth_absrel(g["depth"], e.frames_depth[e.cut + 1:])[sel])
        assert stats["psnr"][0, j] == pytest.approx(np.mean(p), rel=1e-9)
        assert stats["psnr_mse"][0, j] == pytest.approx(10 * np.log10(1 / np.mean(m)), rel=1e-9)
        assert stats["absrel"][0, j] == pytest.approx(np.mean(a), rel=1e-6)
    assert t["n"].sum(axis=0).tolist() == [5, 3]


def test_a_resampled_episode_counts_as_often_as_drawn_and_seeds_are_averaged(fc):
    eps = [_episode(0), _episode(1)]
    t1 = fc.episode_table(eps, [_generated(e, 3 + i) for i, e in enumerate(eps)])
    t2 = fc.episode_table(eps, [_generated(e, 7 + i) for i, e in enumerate(eps)])
    only_first = fc.statistics([t1], np.array([[2.0, 0.0]]))
    alone = fc.statistics([fc.episode_table(eps[:1], [_generated(eps[0], 3)])], np.ones((1, 1)))
    for k in fc.STATS:
        np.testing.assert_allclose(only_first[k], alone[k])
    both = fc.statistics([t1, t2], np.ones((1, 2)))
    mean = {k: (fc.statistics([t1], np.ones((1, 2)))[k] + fc.statistics([t2], np.ones((1, 2)))[k]) / 2 for k in fc.STATS}
    for k in fc.STATS:
        np.testing.assert_allclose(both[k], mean[k])


def test_a_variant_names_its_model_fuse_mode_and_delay(fc):
    assert fc.parse_variant("novel", None) == (None, "novel", None, {})
    assert fc.parse_variant("none", "runs/a") == ("runs/a", "none", None, {})
    assert fc.parse_variant("novel:2", "runs/a") == ("runs/a", "novel", 2, {})
    assert fc.parse_variant("runs/b/model@novel:1", "runs/a") == ("runs/b/model", "novel", 1, {})
    assert fc.parse_variant("/x@y/m@all", None) == ("/x@y/m", "all", None, {}), "the last @ separates the mode"
    # memory options: names stay text, numbers and null are parsed
    assert fc.parse_variant("novel:1+imagined_depth=box+imagined_edge_tol=0.1", None) == (
        None, "novel", 1, {"imagined_depth": "box", "imagined_edge_tol": 0.1})
    assert fc.parse_variant("novel+imagined_edge_tol=null", None)[3] == {"imagined_edge_tol": None}
    for bad in ("sometimes", "novel:x", "runs/b@", "novel:"):
        with pytest.raises(ValueError, match="MODEL_DIR@"):
            fc.parse_variant(bad, None)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        fc.parse_variant("novel+imagined_depth", None)
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        fc.parse_variant("novel+colour=red", None)
    with pytest.raises(ValueError, match="imagined_depth must be one of"):  # checked before anything runs
        fc.parse_variant("novel+imagined_depth=plane", None)
    with pytest.raises(ValueError, match="give the delay once"):
        fc.parse_variant("novel:1+imagined_fuse_delay_chunks=2", None)
