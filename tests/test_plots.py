"""experiments/reports/plots.py: sizes of the PNGs, labels, shared ranges, legends, at most MAX_SERIES series per panel
and input checks; the preview command."""
import math
import re

import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.colors import to_rgb, to_rgba

from experiments.reports import plots

LAYERS = ["backbone/stage0_conv1"] + [f"backbone/stage{s}_block0/conv{c}" for s in (1, 2, 3) for c in (1, 2, 3)]
GROUPS = np.array([16, 16, 16, 32, 32, 32, 64, 64, 64, 128])
CLASS_NAMES = ("floor", "wall", "ceiling", "box", "sphere", "cylinder")


def _panel(title, layers=LAYERS, groups=GROUPS, steps=30, dense=False, seed=0):
  rng = np.random.default_rng(seed)
  s, l = steps, len(layers)
  lam = 1e-4 * 10 ** (3 * np.linspace(0, 1, s)[:, None] * rng.uniform(0.5, 1.5, l)[None])
  alive = np.minimum.accumulate((groups * np.linspace(1, 0.3, s)[:, None]).astype(int), axis=0)
  return {"title": title, "steps": np.arange(s) * 10, "layers": list(layers), "lambda": None if dense else lam,
          "alive": np.tile(groups, (s, 1)) if dense else alive, "num_groups": np.asarray(groups)}


def _pixels(path):
  """(height, width) of the PNG at `path`."""
  return mpimg.imread(path).shape[:2]


def _expected_pixels(fig):
  width, height = fig.get_size_inches() * plots.DPI
  return round(height), round(width)


def _visible_axes(fig):
  return [ax for ax in fig.axes if ax.get_visible()]


def _normalise(text):
  return re.sub(r"\s+", " ", text).strip()


def test_lambda_and_alive_layout_labels_and_size(tmp_path):
  path = tmp_path / "lambda.png"
  panels = [_panel("dense", dense=True), _panel("first order", seed=1), _panel("budget 50 %", seed=2)]
  fig = plots.lambda_and_alive(panels, str(path), suptitle="λ over training")

  assert _pixels(path) == _expected_pixels(fig)
  assert 830 <= _pixels(path)[1] <= plots.MAX_WIDTH_IN * plots.DPI  # fills a README column without shrinking much
  axes = _visible_axes(fig)
  assert len(axes) == 6
  lam_axes = [ax for ax in axes if ax.get_yscale() == "log"]
  alive_axes = [ax for ax in axes if ax.get_yscale() == "linear"]
  assert len(lam_axes) == len(alive_axes) == 3
  assert [_normalise(ax.get_title()) for ax in lam_axes] == ["dense", "first order", "budget 50 %"]
  assert lam_axes[0].get_ylabel() == "λ (penalty strength)"
  assert alive_axes[0].get_ylabel() == "alive channels (fraction of layer)"
  assert all(ax.get_xlabel() == "outer step" for ax in alive_axes)
  # Every row shares its y-range: the λ axes one log range covering all λ values, the alive axes 0–1.05.
  assert len({ax.get_ylim() for ax in lam_axes}) == 1
  low, high = lam_axes[0].get_ylim()
  all_lambda = np.concatenate([p["lambda"].ravel() for p in panels[1:]])
  assert low <= all_lambda.min() and all_lambda.max() <= high
  assert all(ax.get_ylim() == pytest.approx((0, 1.05)) for ax in alive_axes)
  # Alive is drawn as a fraction of the layer's channels.
  fractions = np.concatenate([line.get_ydata() for line in alive_axes[1].get_lines()])
  assert fractions.max() <= 1 and fractions.min() == pytest.approx(min(panels[1]["alive"][-1] / GROUPS))
  # The dense panel says so and draws no λ.
  assert not lam_axes[0].get_lines()
  assert any(t.get_text() == "no sparsity (λ = 0)" for t in lam_axes[0].texts)
  assert fig.get_suptitle() == "λ over training"


def _style(line):
  return to_rgb(line.get_color()), line.get_linestyle()


def _legend_texts(legend):
  return [t.get_text() for t in legend.get_texts()]


def test_lambda_and_alive_keys_stage_colours_and_role_line_styles(tmp_path):
  fig = plots.lambda_and_alive([_panel("a"), _panel("b", seed=1)], str(tmp_path / "lambda.png"))
  assert all(ax.get_legend() is None for ax in fig.axes)
  stage_key, role_key = fig.legends
  assert _legend_texts(stage_key) == ["stage0", "stage1", "stage2", "stage3"]
  assert _legend_texts(role_key) == ["conv1", "conv2", "conv3"]
  colour_of = dict(zip(_legend_texts(stage_key), (to_rgb(h.get_color()) for h in stage_key.legend_handles)))
  style_of = dict(zip(_legend_texts(role_key), (h.get_linestyle() for h in role_key.legend_handles)))
  for ax in _visible_axes(fig):
    # each layer's line in its stage's colour and its role's style: ten layers, ten looks, four colours
    expected = [(colour_of[name.split("_")[0].removeprefix("backbone/")], style_of[name[-5:]]) for name in LAYERS]
    assert [_style(line) for line in ax.get_lines()] == expected
    assert len(set(expected)) == 10 and len({colour for colour, _ in expected}) == 4


def test_lambda_and_alive_keeps_a_layers_look_across_panels(tmp_path):
  reordered = LAYERS[::-1]
  panels = [_panel("a"), _panel("b", layers=reordered, groups=GROUPS[::-1])]
  fig = plots.lambda_and_alive(panels, str(tmp_path / "lambda.png"))
  lam_axes = [ax for ax in _visible_axes(fig) if ax.get_yscale() == "log"]
  looks = [[_style(line) for line in ax.get_lines()] for ax in lam_axes]
  assert looks[1] == looks[0][::-1]


RESNET18_LAYERS = ([f"backbone/stage0_conv{c}" for c in (1, 2, 3)] +
                   [f"backbone/stage{s}_block{b}/{conv}" for s in (1, 2, 3, 4) for b in (0, 1)
                    for conv in ("conv1", "conv2", *(("shortcut",) if s > 1 and b == 0 else ()))] +
                   ["backbone/stage4_stream"])
GENERIC_LAYERS = [f"head{i}" for i in range(14)]


@pytest.mark.parametrize("layers", [RESNET18_LAYERS, GENERIC_LAYERS], ids=["resnet18", "no_stages"])
def test_lambda_and_alive_draws_at_most_eight_colours_per_panel_and_keys_of_at_most_eight(tmp_path, layers):
  groups = np.full(len(layers), 8)
  path = tmp_path / "lambda.png"
  fig = plots.lambda_and_alive([_panel("a", layers, groups), _panel("b", layers, groups, seed=1)], str(path))
  assert _pixels(path) == _expected_pixels(fig)
  key_colours = {to_rgb(h.get_color()) for h in fig.legends[0].legend_handles}
  key_styles = {h.get_linestyle() for legend in fig.legends[1:] for h in legend.legend_handles} or {"-"}
  assert all(len(legend.get_texts()) <= plots.MAX_SERIES for legend in fig.legends)
  for ax in _visible_axes(fig):
    lines = ax.get_lines()
    assert len(lines) == len(layers)
    assert len({to_rgb(line.get_color()) for line in lines}) <= plots.MAX_SERIES
    assert {to_rgb(line.get_color()) for line in lines} <= key_colours  # every colour and style is in a key
    assert {line.get_linestyle() for line in lines} <= key_styles
  if layers is RESNET18_LAYERS:
    assert _legend_texts(fig.legends[0]) == [f"stage{s}" for s in range(5)]
    assert _legend_texts(fig.legends[1]) == ["conv1", "conv2", "conv3", "shortcut", "stream"]
    assert "blocks alike" in fig.legends[1].get_title().get_text()  # stage1_block0/conv1 looks like block1's
  else:  # 14 stages of their own: two to a colour, no role key
    assert len(fig.legends) == 1 and fig.legends[0].get_title().get_text() == "colour: layer"
    assert _legend_texts(fig.legends[0])[:2] == ["head0 … head1", "head2 … head3"]


def test_lambda_and_alive_wraps_many_panels_within_the_width(tmp_path):
  path = tmp_path / "lambda.png"
  fig = plots.lambda_and_alive([_panel(f"run {i}", seed=i) for i in range(6)], str(path))
  assert _pixels(path) == _expected_pixels(fig)
  assert _pixels(path)[1] <= plots.MAX_WIDTH_IN * plots.DPI
  axes = _visible_axes(fig)
  assert len(axes) == 12
  assert len({round(ax.get_position().y0, 3) for ax in axes}) == 4  # two rows of (λ above alive)
  lam_axes = [ax for ax in axes if ax.get_yscale() == "log"]
  assert len({ax.get_ylim() for ax in lam_axes}) == 1


@pytest.mark.parametrize("key, value, message", [
    ("lambda", np.ones((30, 9)), "lambda has shape"),
    ("alive", np.ones((29, 10), int), "alive has shape"),
    ("num_groups", np.ones(3, int), "num_groups has shape"),
    ("steps", np.arange(31), "lambda has shape"),
])
def test_lambda_and_alive_rejects_mismatched_shapes_naming_the_panel(tmp_path, key, value, message):
  bad = {**_panel("second run", seed=1), key: value}
  with pytest.raises(ValueError, match=rf"panel 1 \('second run'\).*{message}"):
    plots.lambda_and_alive([_panel("first run"), bad], str(tmp_path / "bad.png"))
  assert not (tmp_path / "bad.png").exists()


def _example(seed):
  rng = np.random.default_rng(seed)
  h, w = 24, 32
  normals = rng.standard_normal((h, w, 3))
  return {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
          "segmentation": rng.integers(0, len(CLASS_NAMES), (h, w)),
          "depth": rng.uniform(1 + seed, 3 + seed, (h, w)).astype(np.float32),
          "normals": normals / np.linalg.norm(normals, axis=-1, keepdims=True),
          "edges": rng.integers(0, 2, (h, w), dtype=np.uint8)}


def test_synthetic_preview_grid_key_and_size(tmp_path):
  path = tmp_path / "preview.png"
  examples = [_example(i) for i in range(3)]
  fig = plots.synthetic_preview(examples, CLASS_NAMES, str(path))

  assert _pixels(path) == _expected_pixels(fig)
  assert _pixels(path)[1] <= plots.MAX_WIDTH_IN * plots.DPI
  grid = [ax for ax in fig.axes if ax.get_images() and not ax.get_xticks().size and not ax.get_yticks().size]
  assert len(grid) == 3 * 5  # row-major: one row per example
  assert [_normalise(ax.get_title()) for ax in grid[:5]] == [
      "image", "segmentation", "depth (m)", "normals (x,y,z → RGB)", "edges"]
  assert not any(ax.get_title() for ax in grid[5:])
  # Class key: every class name, in order, as coloured patches.
  legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
  assert len(legends) == 1
  assert [t.get_text() for t in legends[0].get_texts()] == list(CLASS_NAMES)
  # Depth: one colour range for all rows, the colour bar labelled in metres and spanning it.
  depth_images = [ax.get_images()[0] for ax in grid[2::5]]
  assert len({im.get_clim() for im in depth_images}) == 1
  assert depth_images[0].get_clim() == pytest.approx((min(e["depth"].min() for e in examples),
                                                      max(e["depth"].max() for e in examples)))
  bars = [ax for ax in fig.axes if ax.get_xlabel() == "depth (m)"]
  assert len(bars) == 1
  # Normals as (n + 1) / 2; edges black (0 in gray_r is white) on white.
  np.testing.assert_allclose(grid[3].get_images()[0].get_array(), (examples[0]["normals"] + 1) / 2, atol=1e-6)
  assert grid[4].get_images()[0].get_cmap().name == "gray_r"


def test_synthetic_preview_rejects_mismatched_maps_naming_the_example(tmp_path):
  bad = {**_example(1), "depth": np.ones((24, 31))}
  with pytest.raises(ValueError, match=r"example 1: depth has shape"):
    plots.synthetic_preview([_example(0), bad], CLASS_NAMES, str(tmp_path / "bad.png"))
  with pytest.raises(ValueError, match="example 0: image"):
    plots.synthetic_preview([{**_example(0), "image": np.zeros((24, 32))}], CLASS_NAMES, str(tmp_path / "bad.png"))


def test_preview_command_draws_the_dataset(tmp_path):
  from data_pipelines.synthetic_scenes import CLASS_NAMES as dataset_classes
  from experiments.reports import synthetic_preview as preview

  out = tmp_path / "nested" / "preview.png"
  fig = preview.preview(str(out), num=2, data_dir=str(tmp_path / "data"),
                        overrides=dict(resolution=32, num_train=2, num_validation=0, num_test=0))
  assert _pixels(out) == _expected_pixels(fig)
  legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
  assert [t.get_text() for t in legend.get_texts()] == list(dataset_classes)
  assert len([ax for ax in fig.axes if ax.get_images()]) == 2 * 5


def _front_points():
  return [{"method": "budget", "stage": "as trained", "flops_kept": (0.5, 0.05), "delta_m": (-3.0, 1.0)},
          {"method": "budget", "stage": "after fine-tuning", "flops_kept": (0.5, 0.05), "delta_m": (1.0, 0.5)},
          {"method": "dense_mtl", "stage": "as trained", "flops_kept": (1.0, 0.0), "delta_m": (2.0, float("nan"))}]


def _panels(fig):
  """The axes of `fig` that draw (not the legend slots below them)."""
  return [ax for ax in fig.axes if ax.axison]


def _series_colours(ax):
  """The colours of everything `ax` draws but its grey reference marks."""
  colours = set()
  for artist in [*ax.get_lines(), *ax.collections]:
    if artist.get_gid() != plots.REFERENCE_GID:
      colours.update([to_rgb(artist.get_color())] if artist in ax.get_lines() else
                     [tuple(c[:3]) for c in artist.get_color()])
  return colours


def _markers(ax):
  """The lines of `ax` that are a point's marker (not error bars, caps, joins or reference marks)."""
  return [line for line in ax.get_lines()
          if line.get_marker() in plots.MARKERS and line.get_gid() != plots.REFERENCE_GID]


def test_delta_m_front_marks_methods_and_stages(tmp_path):
  path = tmp_path / "front.png"
  fig = plots.delta_m_front(_front_points(), ["as trained", "after fine-tuning"], str(path), "a title")
  assert _pixels(path) == _expected_pixels(fig) and _pixels(path)[1] <= plots.MAX_WIDTH_IN * plots.DPI
  (ax,) = _panels(fig)
  assert ax.get_xlabel() == plots.FLOPS_KEPT_LABEL and ax.get_ylabel() == plots.DELTA_M_LABEL
  assert ax.get_xlim() == pytest.approx((0, 1.05)) and fig.get_suptitle() == "a title"
  (legend,) = [a.get_legend() for a in fig.axes if a.get_legend()]
  assert _legend_texts(legend) == ["budget", "dense_mtl"]
  assert _legend_texts(fig.legends[0]) == ["as trained", "after fine-tuning"]  # one panel: no grey dots
  # filled for the first stage, white for the second; the methods' colours differ
  markers = _markers(ax)
  faces = [to_rgba(line.get_markerfacecolor()) for line in markers]
  assert faces.count(to_rgba("white")) == 1 and len({to_rgba(line.get_color()) for line in markers}) == 2
  with pytest.raises(ValueError, match="stages"):
    plots.delta_m_front(_front_points(), ["as trained"], str(path))


def test_method_panels_keep_families_whole_and_split_big_ones():
  budget = [f"budget,flops=0.{i:02d}" for i in range(12, 0, -1)]
  methods = ["dense_mtl", *budget, "magnitude,flops=0.5", "magnitude,flops=0.25+steps=1", "thin_dense", "maml"]
  panels = plots._method_panels(methods)
  assert [name for name, _ in panels] == ["dense_mtl, magnitude, thin_dense, maml", "budget (1 of 2)",
                                          "budget (2 of 2)"]
  assert panels[0][1] == ["dense_mtl", "magnitude,flops=0.5", "magnitude,flops=0.25+steps=1", "thin_dense", "maml"]
  assert panels[1][1] + panels[2][1] == sorted(budget) and len(panels[1][1]) == len(panels[2][1]) == 6
  # a split family's panels take the families after it that fit
  assert [name for name, _ in plots._method_panels([*budget[:9], "maml"])] == ["budget (1 of 2), maml",
                                                                               "budget (2 of 2)"]


def test_shared_label_parts_go_to_the_title():
  labels, shared = plots._less_shared_parts(["budget,flops=0.25+a=1+b=2", "budget,flops=0.5+a=1", "budget+a=1"])
  assert labels == ["flops=0.25+b=2", "flops=0.5", "budget+a=1"] and shared == "budget+a=1"  # the last: all shared
  assert plots._less_shared_parts(["x+a=1+b=2", "x+b=2+a=1"]) == (["x+a=1+b=2", "x+b=2+a=1"], "")  # would be alike
  assert plots._less_shared_parts(["budget"]) == (["budget"], "")


FAMILIES = {"budget": 11, "magnitude": 4, "thin_dense": 2, "fixed_lambda": 3}  # 20 labels, one family of > 8


def _many_methods():
  return [f"{family},flops=0.{i + 1}" + ("+steps=1200" if i % 2 else "")
          for family, count in FAMILIES.items() for i in range(count)]


def _check_method_panels(fig, methods, path):
  """Every panel draws at most MAX_SERIES series in distinct colours, with a legend of at most MAX_SERIES entries
  that is no taller than the panel; every method is in exactly one panel; the panels share their axes."""
  assert _pixels(path) == _expected_pixels(fig) and _pixels(path)[1] == plots.MAX_WIDTH_IN * plots.DPI
  panels = _panels(fig)
  slots = [ax for ax in fig.axes if ax.get_legend()]
  assert len(panels) == len(slots) >= math.ceil(len(methods) / plots.MAX_SERIES)
  renderer = fig.canvas.get_renderer()
  drawn = []
  for ax, slot in zip(panels, slots):
    legend = slot.get_legend()
    entries = len(legend.get_texts())
    assert entries <= plots.MAX_SERIES and len(_series_colours(ax)) == entries
    handle_colours = [to_rgb(h.get_color()) for h in legend.legend_handles]
    assert len(set(handle_colours)) == entries and set(handle_colours) == _series_colours(ax)
    assert legend.get_window_extent(renderer).height <= ax.get_window_extent(renderer).height
    drawn += [t.get_text() for t in legend.get_texts()]
  assert len(drawn) == len(methods)
  assert len({ax.get_xlim() for ax in panels}) == 1 and len({ax.get_ylim() for ax in panels}) == 1
  assert all(len(legend.get_texts()) <= plots.MAX_SERIES for legend in fig.legends)
  return panels


def test_delta_m_front_spreads_many_methods_over_panels_with_the_others_in_grey(tmp_path):
  methods = _many_methods()
  rng = np.random.default_rng(0)
  points = [{"method": m, "stage": stage, "flops_kept": (rng.uniform(0.1, 1), 0.02), "delta_m": (rng.normal(), 0.5)}
            for m in methods for stage in ("as trained", "after fine-tuning")]
  path = tmp_path / "front.png"
  fig = plots.delta_m_front(points, ["as trained", "after fine-tuning"], str(path), "many")
  panels = _check_method_panels(fig, methods, path)
  assert [ax.get_title() for ax in panels] == ["budget (1 of 2), thin_dense", "budget (2 of 2), fixed_lambda",
                                               "magnitude"]
  for ax in panels:
    own = len(_markers(ax))
    (grey,) = [line for line in ax.get_lines() if line.get_gid() == plots.REFERENCE_GID and line.get_marker() == "o"]
    assert own + len(grey.get_xdata()) == len(points)  # each panel shows the whole front
    assert to_rgb(grey.get_color()) not in _series_colours(ax)
  assert _legend_texts(fig.legends[0]) == ["as trained", "after fine-tuning", "the other panels' methods"]


def test_kept_channels_spreads_many_methods_over_panels(tmp_path):
  methods = _many_methods()
  series = [{"method": m, "mean": GROUPS * (i + 1) / (len(methods) + 1), "std": np.ones(len(LAYERS))}
            for i, m in enumerate(methods)]
  path = tmp_path / "channels.png"
  fig = plots.kept_channels(LAYERS, GROUPS, series, str(path), "kept")
  panels = _check_method_panels(fig, methods, path)
  for ax in panels:
    assert ax.get_ylim() == pytest.approx((0, 1.05))
    assert [t.get_text() for t in ax.get_xticklabels()] == [n.removeprefix("backbone/") for n in LAYERS]
    assert len([line for line in ax.get_lines() if line.get_linestyle() != "None"]) <= plots.MAX_SERIES


def test_kept_channels_draws_fractions_of_each_layer(tmp_path):
  path = tmp_path / "channels.png"
  series = [{"method": "budget", "mean": GROUPS / 2, "std": np.ones(len(LAYERS))},
            {"method": "dense", "mean": GROUPS.astype(float), "std": np.full(len(LAYERS), np.nan)}]
  fig = plots.kept_channels(LAYERS, GROUPS, series, str(path), "kept")
  assert _pixels(path) == _expected_pixels(fig) and _pixels(path)[1] <= plots.MAX_WIDTH_IN * plots.DPI
  (ax,) = _panels(fig)
  assert ax.get_ylabel() == plots.KEPT_LABEL and ax.get_ylim() == pytest.approx((0, 1.05))
  lines = [line for line in ax.get_lines() if line.get_linestyle() != "None"]  # not the error bars' caps
  np.testing.assert_allclose(lines[0].get_ydata(), 0.5)
  np.testing.assert_allclose(lines[1].get_ydata(), 1.0)
  assert [t.get_text() for t in ax.get_xticklabels()] == [n.removeprefix("backbone/") for n in LAYERS]
  with pytest.raises(ValueError, match="shape"):
    plots.kept_channels(LAYERS[:-1], GROUPS[:-1], series, str(path))


def _inside_figure(fig):
  """Whether every legend text of `fig` lies within the figure (drawn at its saved size)."""
  renderer = fig.canvas.get_renderer()
  box = fig.bbox
  texts = [t for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
           for t in legend.get_texts()]
  extents = [t.get_window_extent(renderer) for t in texts]
  return bool(texts) and all(box.x0 - 1 <= e.x0 and e.x1 <= box.x1 + 1 and box.y0 - 1 <= e.y0 for e in extents)


def test_long_labels_wrap_at_their_overrides_and_stay_inside_both_figures(tmp_path):
  labels = [f"budget,flops=0.25+sparsity.tie_streams=True+sparsity.weighting=unweighted+budget.cost_init=True+"
            f"sparsity.lambda_init=0.{i}" for i in range(1, 13)] + ["dense_mtl"]
  labels += [f"magnitude,flops=0.{i}+sparsity.relative_threshold=True+sparsity.weighting=unweighted+"
             f"sparsity.lambda_init=0.15+budget.cost_init=False+steps=1200" for i in range(1, 4)]
  points = [{"method": m, "stage": "as trained", "flops_kept": (0.3, 0.01), "delta_m": (-1.0, 0.5)} for m in labels]
  front = plots.delta_m_front(points, ["as trained"], str(tmp_path / "front.png"))
  series = [{"method": m, "mean": GROUPS / 2, "std": np.ones(len(LAYERS))} for m in labels]
  channels = plots.kept_channels(LAYERS, GROUPS, series, str(tmp_path / "channels.png"))
  for fig, name in ((front, "front.png"), (channels, "channels.png")):
    height, width = _pixels(tmp_path / name)
    assert (height, width) == _expected_pixels(fig) and width <= plots.MAX_WIDTH_IN * plots.DPI
    assert _inside_figure(fig)
    legends = [(ax.get_title(), slot.get_legend()) for ax, slot in zip(_panels(fig), fig.axes[len(_panels(fig)):])]
    texts = {}
    for panel_title, legend in legends:  # a label's parts shared by its panel are in the panel's title
      shared = panel_title.split("all: ", 1)[1].replace("\n", "") if "all: " in panel_title else ""
      for text in _legend_texts(legend):
        texts[text] = shared
    parts = lambda label: frozenset(re.split(r"[,+]", label.replace("\n", ""))) - {""}
    assert {parts(text) | parts(shared) for text, shared in texts.items()} == {parts(label) for label in labels}
    assert any("\n+" in t for t in texts)  # broken before an override
  assert plots._wrap_label("a+bb+ccc", 4) == "a+bb\n+ccc" and plots._wrap_label("short", 4) == "short"
