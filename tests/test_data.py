"""List parsing, validation errors, preprocessing and class-balanced loading."""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import class_image, make_domain, write_image

from biwaa_tf.data import lists, pipeline, preprocess
from biwaa_tf.errors import UserError


def test_list_file_parsing(tmp_path):
  p = tmp_path / "l.txt"
  p.write_text("a/cat/1.jpg 0\n\n# comment\nb b/dog/2.png 1\n")
  got = lists.read_list_file(str(p), "/data")
  assert got.paths == ("/data/a/cat/1.jpg", "/data/b b/dog/2.png")
  np.testing.assert_array_equal(got.labels, [0, 1])
  assert got.class_names == ("cat", "dog")


def test_unlabelled_target_list(tmp_path):
  p = tmp_path / "l.txt"
  p.write_text("x/1.jpg\nx/2.jpg\n")
  got = lists.read_list_file(str(p), "", num_classes=4)
  assert not got.labelled and len(got.class_names) == 4


def test_folder_reading(tmp_path):
  rng = np.random.default_rng(0)
  for k, name in enumerate(["b_dog", "a_cat"]):
    write_image(str(tmp_path / name / "x.png"), class_image(k, rng))
  got = lists.read_folder(str(tmp_path))
  assert got.class_names == ("a_cat", "b_dog")
  assert [os.path.basename(os.path.dirname(p)) for p in got.paths] == ["a_cat", "b_dog"]
  np.testing.assert_array_equal(got.labels, [0, 1])


def test_shipped_benchmark_lists_resolve():
  got = lists.load_image_list("office31/amazon.txt", "/data")
  assert got.size == 2817 and len(got.class_names) == 31
  dn = lists.load_image_list("domainnet40/sketch_train.txt", "")
  assert len(dn.class_names) == 40


@pytest.mark.parametrize("content, message", [
    ("a/1.jpg x\n", "l.txt:1: malformed line"),
    ("a/1.jpg 0\na/2.jpg -1\n", "l.txt:2: negative label -1"),
    ("a/1.jpg 0\nnot a path at all\n", "l.txt:2: malformed line"),
    ("", "l.txt: the list is empty"),
    ("a/1.jpg 0\na/2.jpg\n", "has no label while others do"),
])
def test_bad_list_lines(tmp_path, content, message):
  p = tmp_path / "l.txt"
  p.write_text(content)
  with pytest.raises(UserError, match=message):
    lists.read_list_file(str(p), "")


def test_label_out_of_range(tmp_path):
  p = tmp_path / "l.txt"
  p.write_text("a/1.jpg 0\na/2.jpg 7\n")
  with pytest.raises(UserError, match=r"l.txt:2: label 7 is out of range for 3 classes"):
    lists.read_list_file(str(p), "", num_classes=3)


def test_empty_directory_is_refused_in_one_line(tmp_path):
  with pytest.raises(UserError, match="no images .* and no class sub-folders"):
    lists.read_folder(str(tmp_path))


def test_unlabelled_folder_of_images_any_nesting(tmp_path):
  """Images at the top level: an unlabelled target, every image below it (sub-folders
  carry no class meaning)."""
  rng = np.random.default_rng(0)
  for rel in ("b.png", "a.jpg", "day2/c.png", "day2/deeper/d.png", ".hidden/e.png"):
    write_image(str(tmp_path / rel), class_image(0, rng), rel.rsplit(".", 1)[1])
  got = lists.read_folder(str(tmp_path))
  assert not got.labelled and got.class_names == ()
  assert [os.path.relpath(p, tmp_path) for p in got.paths] == [
      "a.jpg", "b.png", os.path.join("day2", "c.png"), os.path.join("day2", "deeper", "d.png")]


def test_heldout_split_is_stratified_disjoint_and_seeded():
  labels = np.repeat([0, 1, 2, 3], [40, 20, 2, 1])
  source = lists.ImageList("s", tuple(f"{i}.png" for i in range(len(labels))), labels,
                           ("a", "b", "c", "d"))
  train, held, alone = lists.split_heldout(source, 0.05, seed=3)
  # round(5% of 40) = 2, of 20 = 1, of 2 -> at least 1; the one-image class trains
  np.testing.assert_array_equal(np.bincount(held.labels, minlength=4), [2, 1, 1, 0])
  assert alone == [3] and train.size + held.size == source.size
  assert not set(train.paths) & set(held.paths)
  assert list(held.paths) == sorted(held.paths, key=lambda p: int(p.split(".")[0]))
  again = lists.split_heldout(source, 0.05, seed=3)[1]
  other = lists.split_heldout(source, 0.05, seed=4)[1]
  assert again.paths == held.paths and other.paths != held.paths


def test_labelled_target_folders_matched_to_the_source_by_name():
  """A partial target (a subset of the source's class folders, in another order) gets
  the source's indices; a folder the source lacks is refused naming it."""
  source = lists.ImageList("s", ("x",) * 3, np.array([0, 1, 2]), ("cat", "cow", "dog"))
  partial = lists.ImageList("t", ("y",) * 3, np.array([0, 1, 1]), ("cat", "dog"))
  got = lists.match_classes(source, partial)
  np.testing.assert_array_equal(got.labels, [0, 2, 2])
  assert got.class_names == source.class_names
  foreign = lists.ImageList("t", ("y",), np.array([0]), ("cat", "horse"))
  with pytest.raises(UserError, match="class folder.s. horse are not classes of s"):
    lists.match_classes(source, foreign)
  unnamed = lists.ImageList("t", ("y",), np.array([0]), ("class_0", "class_1"))
  with pytest.raises(UserError, match="s has 3 classes but t has 2"):
    lists.match_classes(source, unnamed)


def test_nan_or_infinite_pixels_are_refused_naming_the_image():
  x = np.zeros((3, 4, 4, 1), np.float32)
  x[1, 2, 2, 0] = np.nan
  x[2, 0, 0, 0] = np.inf
  with pytest.raises(UserError, match="source: 2 pixel values are NaN or infinite "
                                      r"\(the first in image 1\)"):
    lists.as_uint8_rgb(x, "source")


def test_bad_image_files_are_named(tmp_path):
  good = tmp_path / "good.png"
  write_image(str(good), np.zeros((4, 4, 3)))
  (tmp_path / "empty.jpg").write_bytes(b"")
  (tmp_path / "text.jpg").write_bytes(b"hello, not an image")
  (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:-20])
  jpg = tmp_path / "ok.jpg"
  write_image(str(jpg), np.zeros((4, 4, 3)), "jpeg")
  (tmp_path / "trunc.jpg").write_bytes(jpg.read_bytes()[:-10])
  cases = {"missing.png": "file not found", "empty.jpg": "empty file",
           "text.jpg": "not an image", "trunc.png": "truncated PNG",
           "trunc.jpg": "truncated JPEG"}
  for name, reason in cases.items():
    assert reason in lists.check_image_file(str(tmp_path / name)), name
  assert lists.check_image_file(str(good)) is None
  assert lists.check_image_file(str(jpg)) is None
  il = lists.ImageList("l.txt", (str(good), str(tmp_path / "text.jpg")), np.array([0, 0]),
                       ("a",))
  with pytest.raises(UserError, match=r"text.jpg: not an image .*entry 2 of l.txt"):
    lists.validate_images(il, skip_invalid=False)
  kept, dropped = lists.validate_images(il, skip_invalid=True)
  assert dropped == 1 and kept.paths == (str(good),)


def test_different_classes_refused():
  a = lists.ImageList("s", ("x",), np.array([0]), ("cat", "dog"))
  b = lists.ImageList("t", ("y",), np.array([0]), ("cat", "cow"))
  with pytest.raises(UserError, match="class 1 is 'dog' in s but 'cow' in t"):
    lists.check_same_classes(a, b)
  c = lists.ImageList("t", ("y",), np.array([0]), ("cat", "dog", "cow"))
  with pytest.raises(UserError, match="s has 2 classes but t has 3"):
    lists.check_same_classes(a, c)


# ----- preprocessing -----

def test_normalize_modes_match_numpy():
  x = np.random.default_rng(0).uniform(0, 255, size=(2, 2, 3)).astype(np.float32)
  caffe = x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
  np.testing.assert_allclose(preprocess.normalize(x, "caffe").numpy(), caffe, rtol=1e-6)
  torch = (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(preprocess.normalize(x, "torch").numpy(), torch, rtol=1e-5)
  np.testing.assert_allclose(preprocess.normalize(x, "unit").numpy(), x / 127.5 - 1,
                             rtol=1e-6)


def test_ten_crop_known_crops():
  # A 4x4 image whose pixel value is its position: crops of 2 are known by hand.
  img = np.arange(16, dtype=np.float32).reshape(4, 4, 1).repeat(3, axis=2)
  opts = preprocess.ImageOptions(4, 2, False, "unit", resize_method="bilinear")
  crops = preprocess.ten_crop(tf.constant(img), opts).numpy()
  raw = (crops[..., 0] + 1) * 127.5
  expected = [[[0, 1], [4, 5]], [[2, 3], [6, 7]], [[8, 9], [12, 13]],
              [[10, 11], [14, 15]], [[5, 6], [9, 10]]]
  expected += [np.fliplr(np.array(e)) for e in expected]
  np.testing.assert_allclose(raw, np.array(expected, np.float32), atol=1e-4)


def test_eval_view_eager_and_in_dataset_map_agree():
  img = np.random.default_rng(1).uniform(0, 255, size=(10, 10, 3)).astype(np.uint8)
  opts = preprocess.ImageOptions(8, 6, False, "unit")
  eager = preprocess.eval_view(tf.constant(img), opts).numpy()
  ds = tf.data.Dataset.from_tensors(img).map(lambda x: preprocess.eval_view(x, opts))
  np.testing.assert_allclose(next(iter(ds)).numpy(), eager, rtol=1e-6)
  assert eager.shape == (6, 6, 3)


def test_decode_gray_rgba_and_gif_to_rgb(tmp_path):
  gray = tf.io.encode_png(np.full((3, 3, 1), 7, np.uint8)).numpy()
  rgba = tf.io.encode_png(np.full((3, 3, 4), 9, np.uint8)).numpy()
  (tmp_path / "g.png").write_bytes(gray)
  (tmp_path / "a.png").write_bytes(rgba)
  assert preprocess.decode(str(tmp_path / "g.png")).numpy().shape == (3, 3, 3)
  np.testing.assert_array_equal(preprocess.decode(str(tmp_path / "a.png")).numpy(), 9)


# ----- class-balanced loading -----

def test_acceptance_probabilities_give_target_distribution():
  initial = np.array([0.5, 0.3, 0.2, 0.0])
  target = np.array([1 / 3, 1 / 3, 1 / 3, 0.0])
  a = pipeline.acceptance_probabilities(target, initial)
  resulting = initial * a / (initial * a).sum()
  np.testing.assert_allclose(resulting, target, atol=1e-12)
  assert a.max() == 1.0


def test_balanced_index_stream_histogram():
  # 20:5:1 labels; the balanced stream must come out uniform. With 3000 draws
  # each class frequency has std sqrt(p(1-p)/n) ~ 0.0086: 0.04 is > 4 sigma.
  labels = np.array([0] * 20 + [1] * 5 + [2] * 1)
  ds = pipeline.index_stream(labels, seed=3, balance_labels=labels, num_classes=3)
  drawn = np.array([int(y) for _, y in ds.take(3000).as_numpy_iterator()])
  np.testing.assert_allclose(np.bincount(drawn, minlength=3) / 3000, [1 / 3] * 3, atol=0.04)


def test_class_without_samples_is_dropped():
  labels = np.array([0] * 10 + [2] * 3)
  ds = pipeline.index_stream(labels, seed=0, balance_labels=labels, num_classes=3)
  drawn = np.array([int(y) for _, y in ds.take(1000).as_numpy_iterator()])
  assert set(drawn) == {0, 2}
  assert abs(np.mean(drawn == 2) - 0.5) < 0.06


def test_pseudo_class_too_small_for_a_batch_share_is_dropped():
  # K = 4, batch 8: a class needs floor(n * 4 / 8) >= 1, i.e. 2 samples; class 3
  # has 1 (dropped), class 2 has 2 (kept), class 1 none.
  labels = np.array([0] * 10 + [2] * 2 + [3])
  target, _, dropped = pipeline.balanced_target_distribution(labels, 4, batch_size=8)
  np.testing.assert_allclose(target, [0.5, 0, 0.5, 0])
  assert dropped.tolist() == [1, 3]
  ds = pipeline.index_stream(labels, seed=0, balance_labels=labels, num_classes=4,
                             batch_size=8)
  assert set(int(y) for _, y in ds.take(400).as_numpy_iterator()) == {0, 2}
  # Without batch_size only the empty class goes; if every class is too small,
  # only empty ones are dropped (never an empty stream).
  assert pipeline.balanced_target_distribution(labels, 4)[2].tolist() == [1]
  assert pipeline.balanced_target_distribution(labels, 4, batch_size=100)[2].tolist() == [1]


def test_long_tail_subsample_keeps_ratio_powers():
  # 10 classes x 20,000 samples: class k keeps 20^(-k/9) (std of a share < 0.004).
  labels = np.repeat(np.arange(10), 20000)
  keep = lists.label_shift_mask(labels, 10, "long_tail", 20.0, seed=0)
  kept = np.bincount(labels[keep], minlength=10) / 20000
  np.testing.assert_allclose(kept, 20.0 ** (-np.arange(10) / 9), atol=0.01)
  assert kept[0] == 1.0
  rev = lists.label_shift_mask(labels, 10, "reverse_tail", 20.0, seed=0)
  np.testing.assert_allclose(np.bincount(labels[rev], minlength=10) / 20000,
                             20.0 ** (-np.arange(9, -1, -1) / 9), atol=0.01)


def test_step_and_partial_subsamples():
  labels = np.repeat(np.arange(10), 20000)
  step = lists.label_shift_mask(labels, 10, "step", 10.0, seed=0)
  np.testing.assert_allclose(np.bincount(labels[step], minlength=10) / 20000,
                             [1.0] * 5 + [0.1] * 5, atol=0.01)
  partial = lists.label_shift_mask(labels, 10, "partial", 3.0, seed=0)
  assert np.bincount(labels[partial], minlength=10).tolist() == [20000] * 7 + [0] * 3
  with pytest.raises(UserError, match="partial:10: leave out 1 to 9 of the 10 classes"):
    lists.label_shift_mask(labels, 10, "partial", 10.0)
  # 3 classes: the step's first half is classes 0 and 1.
  three = lists.label_shift_mask(np.repeat(np.arange(3), 20000), 3, "step", 4.0, seed=1)
  np.testing.assert_allclose(np.bincount(np.repeat(np.arange(3), 20000)[three]) / 20000,
                             [1.0, 1.0, 0.25], atol=0.01)


def test_shuffled_and_dirichlet_shifts_draw_the_class_order_from_the_seed():
  from biwaa_tf import config
  labels = np.repeat(np.arange(10), 2000)
  plain = lists.label_shift_mask(labels, 10, "long_tail", 20.0, seed=5)
  kind, ratio, shuffled = config.parse_subsample("long_tail:20:shuffled")
  mixed = lists.label_shift_mask(labels, 10, kind, ratio, shuffled, seed=5)
  count = lambda keep: np.bincount(labels[keep], minlength=10)  # noqa: E731
  perm = np.random.default_rng([5, 2]).permutation(10)  # class c takes position perm[c]
  expected = 2000 * 20.0 ** (-perm / 9)
  np.testing.assert_allclose(count(mixed), expected, rtol=0.1, atol=15)
  assert not np.array_equal(count(mixed), count(plain))
  d = lists.label_shift_mask(labels, 10, *config.parse_subsample("dirichlet:0.3"), seed=5)
  p = np.random.default_rng([5, 2]).dirichlet(np.full(10, 0.3))
  np.testing.assert_allclose(count(d), 2000 * p / p.max(), rtol=0.1, atol=15)
  again = lists.label_shift_mask(labels, 10, "dirichlet", 0.3, True, seed=5)
  other = lists.label_shift_mask(labels, 10, "dirichlet", 0.3, True, seed=6)
  assert np.array_equal(again, d) and not np.array_equal(count(other), count(d))


@pytest.mark.parametrize("spec", ["long_tail", "long_tail:0.5", "tail:20", "long_tail:x",
                                  "partial:1.5", "step:0", "step:4:random", "dirichlet:0"])
def test_bad_target_subsample_is_refused(spec):
  from biwaa_tf import config
  with pytest.raises(UserError, match="--target_subsample"):
    config.parse_subsample(spec)


def test_rejected_candidates_are_never_decoded(tmp_path):
  # Class 1 has one sample among 40: balancing rejects most class-0 candidates.
  root = str(tmp_path)
  path = make_domain(root, "d", [39, 1], seed=0)
  il = lists.read_list_file(path, root)
  opts = pipeline.ImageOptions(28, 28, False, "unit")
  decoded = []
  original = preprocess.decode

  def counting_decode(p):
    tf.py_function(lambda: decoded.append(1) or 0, [], tf.int32)
    return original(p)
  preprocess.decode = counting_decode
  try:
    ds = pipeline.train_dataset(il, opts, 10, seed=0, balance_labels=il.labels, num_classes=2)
    _, y, _, _ = next(iter(ds.take(1)))
  finally:
    preprocess.decode = original
  # A balanced batch of 10 needs ~200 candidates (acceptance 2/40); decoding
  # after rejection reads only accepted ones (plus what the parallel map
  # prefetches), decoding before it would read every candidate.
  assert 2 <= int(np.sum(y.numpy())) <= 8
  assert 10 <= len(decoded) < 100


def test_make_list_round_trip(tmp_path):
  from biwaa_tf.commands.make_list import make_list
  rng = np.random.default_rng(0)
  for k, name in enumerate(["cat", "dog"]):
    for i in range(2):
      write_image(str(tmp_path / "dom" / name / f"{i}.png"), class_image(k, rng))
  out = str(tmp_path / "dom.txt")
  assert make_list(str(tmp_path / "dom"), out) == 4
  assert open(out).read().splitlines()[0] == "dom/cat/0.png 0"
  back = lists.read_list_file(out, str(tmp_path))
  assert back.class_names == ("cat", "dog") and list(back.labels) == [0, 0, 1, 1]


def test_image_unreadable_during_training_is_skipped_and_counted(tmp_path):
  root = str(tmp_path)
  path = make_domain(root, "d", [3, 3], seed=0)
  il = lists.read_list_file(path, root)
  bad = 4
  with open(il.paths[bad], "wb") as f:  # corrupted after validation
    f.write(b"\x89PNG\r\n\x1a\n garbage")
  opts = pipeline.ImageOptions(28, 28, False, "unit")
  ds = pipeline.training_pairs(il, il, opts, 4, seed=0, num_classes=2)
  steps = 6
  for _, positions in ds.take(steps):
    last = positions.numpy().tolist()
  skipped = pipeline.skipped_images(last, steps, 4)
  # Expected: how often the bad index occurs in each domain's stream up to there.
  for domain, seed in ((0, 0), (1, 1)):
    balance = il.labels if domain == 0 else None
    stream = pipeline.index_stream(il.labels, seed, balance, 2).take(int(last[domain]) + 1)
    expected = sum(int(i) == bad for i, _ in stream.as_numpy_iterator())
    assert skipped[domain] == expected
  assert sum(skipped) >= 1


def test_input_resumed_at_its_position_continues_the_same_batches(tmp_path):
  """A resumed run rebuilds its input from the checkpoint's stream positions: the
  batches after step k equal those one iterator gives after k steps, with a
  class-balanced target (rejection draws), an unreadable file (a gap in the positions)
  and more steps than an epoch of either domain."""
  root = str(tmp_path)
  il = lists.read_list_file(make_domain(root, "d", [5, 2], seed=0), root)
  with open(il.paths[3], "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n garbage")
  opts = pipeline.ImageOptions(28, 28, False, "unit", train_crop="random")
  balance = np.array([0, 1, 1, 0, 1, 0, 1])

  def pairs(start=(0, 0)):
    return pipeline.training_pairs(il, il, opts, 3, seed=5, target_balance=balance,
                                   num_classes=2, start=start)
  whole = list(pairs().take(9).as_numpy_iterator())
  k = 4
  resumed = list(pairs(start=whole[k - 1][1] + 1).take(9 - k).as_numpy_iterator())
  for a, b in zip(whole[k:], resumed):
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
      np.testing.assert_array_equal(x, y)
  assert (whole[-1][1] + 1 > 9 * 3).any()  # a gap: the unreadable file was skipped


def test_clutter_shift_draws_class_unrelated_structure():
  from biwaa_tf.data import demo_digits
  blank = np.zeros((4, demo_digits.SIZE, demo_digits.SIZE))
  a = demo_digits._clutter(blank, np.random.default_rng(0))
  b = demo_digits._clutter(blank, np.random.default_rng(0))
  np.testing.assert_array_equal(a, b)  # seeded: the cached domain is reproducible
  assert a.shape == blank.shape and a.min() >= 0 and a.max() <= 255
  bright = (a > 100).reshape(4, -1).sum(axis=1)
  assert (bright > 40).all()  # lines and a blob on every (empty) image
  assert len(set(bright.tolist())) > 1  # different clutter per image
  assert demo_digits.NAMES == ("digits_source", "digits_target", "digits_clutter")
