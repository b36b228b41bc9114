"""Figures sized to be read where they are shown: a GitHub README column, about 830 px wide.

Every function saves a PNG and returns the matplotlib Figure (for tests and further editing). Figures are drawn on
their own Agg canvas, without pyplot, so importing this module changes no global backend and a returned figure is
freed when it is no longer referenced.

Sizing rule: at most MAX_WIDTH_IN inches wide at DPI dots per inch (960 px), so a README shows them at >= 86 % of
their size; fonts are 9-10 pt, i.e. >= 13 px on screen there.
"""
import math
import textwrap
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps, patches, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

DPI = 120
MAX_WIDTH_IN = 8.0
PANEL_WIDTH_IN = 3.0
MAX_PANELS_PER_ROW = 4
LAMBDA_LABEL = "λ (penalty strength)"
ALIVE_LABEL = "alive channels (fraction of layer)"
STEP_LABEL = "outer step"
DENSE_NOTE = "no sparsity (λ = 0)"
LINE_STYLES = ("-", "--", ":", "-.")
PREVIEW_COLUMNS = ("image", "segmentation", "depth (m)", "normals (x,y,z → RGB)", "edges")
_FONT = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 9}


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=DPI)
  FigureCanvasAgg(fig)
  return fig


def _short(name: str) -> str:
  return name.removeprefix("backbone/")


LEGEND_HANDLE_IN, LEGEND_CHAR_IN, LEGEND_LINE_IN = 0.6, 0.068, 0.22  # one 9 pt legend entry: handle, character, line


def _entry_in(labels: Sequence[str]) -> float:
  """Width (inches) of the widest legend entry among `labels` (9 pt; a label's lines are its parts between "\\n")."""
  return LEGEND_HANDLE_IN + LEGEND_CHAR_IN * max(len(line) for label in labels for line in label.split("\n"))


def _wrap_label(label: str, max_chars: int) -> str:
  """`label` broken into lines of at most `max_chars` characters before a "+" (a sweep's overrides) where it is
  longer; a part longer than that stays whole."""
  lines = [""]
  for i, part in enumerate(label.split("+")):
    piece = part if i == 0 else "+" + part
    if lines[-1] and len(lines[-1]) + len(piece) > max_chars:
      lines.append(piece)
    else:
      lines[-1] += piece
  return "\n".join(lines)


def _legend_below(labels: Sequence[str], width_in: float) -> tuple[list[str], int, float]:
  """A legend below the axes of a figure `width_in` wide: (labels wrapped to fit it, columns, height in inches)."""
  max_chars = max(12, int((width_in - LEGEND_HANDLE_IN) / LEGEND_CHAR_IN))
  wrapped = [_wrap_label(label, max_chars) for label in labels]
  cols = max(1, min(len(labels), int(width_in // _entry_in(wrapped))))
  lines = sum(max(label.count("\n") + 1 for label in wrapped[i:i + cols]) for i in range(0, len(wrapped), cols))
  return wrapped, cols, LEGEND_LINE_IN * lines


def _layer_styles(names: Sequence[str]) -> dict[str, dict[str, Any]]:
  """Colour and line style per layer name: tab10 colours in order, the line style changing every 10 layers."""
  colours = colormaps["tab10"].colors
  return {name: {"color": colours[i % 10], "linestyle": LINE_STYLES[(i // 10) % len(LINE_STYLES)]}
          for i, name in enumerate(names)}


def _check_panel(index: int, panel: Mapping[str, Any]) -> dict[str, Any]:
  """The panel's arrays as numpy, after checking their shapes; ValueError naming the panel otherwise."""
  label = f"panel {index} ({panel.get('title', '<no title>')!r})"
  missing = {"title", "steps", "layers", "alive", "num_groups"} - set(panel)
  if missing:
    raise ValueError(f"{label} lacks {sorted(missing)}")
  steps = np.asarray(panel["steps"])
  layers = [str(name) for name in panel["layers"]]
  alive = np.asarray(panel["alive"])
  num_groups = np.asarray(panel["num_groups"])
  lam = None if panel.get("lambda") is None else np.asarray(panel["lambda"], dtype=float)
  s, l = steps.shape[0] if steps.ndim == 1 else -1, len(layers)
  if steps.ndim != 1 or s == 0:
    raise ValueError(f"{label}: steps must have shape (S,) with S > 0, got {steps.shape}")
  if len(set(layers)) != l:
    raise ValueError(f"{label}: layer names repeat: {layers}")
  for key, value, shape in (("lambda", lam, (s, l)), ("alive", alive, (s, l)), ("num_groups", num_groups, (l,))):
    if value is not None and value.shape != shape:
      raise ValueError(f"{label}: {key} has shape {value.shape}, expected {shape} (S steps, L layers)")
  if np.any(num_groups <= 0):
    raise ValueError(f"{label}: num_groups must be positive, got {num_groups.tolist()}")
  if np.any(alive < 0) or np.any(alive > num_groups):
    raise ValueError(f"{label}: alive must lie in [0, num_groups] per layer")
  if lam is not None and np.any(lam < 0):
    raise ValueError(f"{label}: lambda must be >= 0 (it is drawn on a log axis)")
  return {"title": str(panel["title"]), "steps": steps, "layers": layers, "lambda": lam,
          "fraction": alive / num_groups}


def lambda_and_alive(panels: Sequence[Mapping[str, Any]], path: str, suptitle: str | None = None) -> Figure:
  """λ per layer (top) and alive channels per layer (bottom) over outer steps, one column per panel.

  Args:
    panels: one dict per run, with
      "title": str, the column's title;
      "steps": (S,) ints, outer step of each record;
      "layers": L layer names (a leading "backbone/" is left out of the legend);
      "lambda": (S, L) floats >= 0, the penalty strength of each layer at each record, dimensionless; or None for a
        dense run (the λ panel then says "no sparsity (λ = 0)");
      "alive": (S, L) ints, alive (non-zero) channels of each layer at each record;
      "num_groups": (L,) ints, channels (groups) of each layer; alive is drawn as alive / num_groups in [0, 1].
      S and L may differ between panels; a layer name keeps its colour in every panel.
    path: where the PNG goes.
    suptitle: title above all panels (None: none).

  Layout: panels side by side, each λ above alive, about PANEL_WIDTH_IN inches wide and at most MAX_WIDTH_IN in all;
  more than MAX_PANELS_PER_ROW panels wrap into several rows. All λ axes share one y-range (log scale), all alive
  axes 0–1.05. One legend, below the panels, names the layers.

  Returns:
    The Figure (also saved to `path`).

  Raises:
    ValueError: no panels, or a panel whose arrays do not have the shapes above (the message names the panel).
  """
  if not panels:
    raise ValueError("lambda_and_alive needs at least one panel")
  checked = [_check_panel(i, panel) for i, panel in enumerate(panels)]
  names = list(dict.fromkeys(name for p in checked for name in p["layers"]))
  styles = _layer_styles(names)

  n = len(checked)
  grid_rows = math.ceil(n / MAX_PANELS_PER_ROW)
  cols = math.ceil(n / grid_rows)
  width = min(MAX_WIDTH_IN, PANEL_WIDTH_IN * cols + 0.9)
  legend_labels = [_short(name) for name in names]
  if len(set(legend_labels)) < len(names):  # "backbone/x" and "x" both present: keep the full names
    legend_labels = names
  entry_in = 0.55 + 0.075 * max(len(label) for label in legend_labels)  # handle + text at 9 pt
  legend_cols = max(1, min(len(names), int((width - 0.3) // entry_in)))
  legend_rows = math.ceil(len(names) / legend_cols)
  height = grid_rows * 4.4 + (0.35 if suptitle else 0) + 0.25 * legend_rows + 0.35

  with rc_context(_FONT):
    fig = _new_figure(width, height)
    fig.set_layout_engine("constrained", h_pad=0.04, w_pad=0.04, hspace=0.02, wspace=0.02)
    axes = fig.subplots(2 * grid_rows, cols, squeeze=False)
    lam_axes, alive_axes = [], []
    for i, p in enumerate(checked):
      row, col = divmod(i, cols)
      ax_lam, ax_alive = axes[2 * row, col], axes[2 * row + 1, col]
      ax_lam.sharex(ax_alive)
      lam_axes.append(ax_lam)
      alive_axes.append(ax_alive)
      ax_lam.set_title("\n".join(textwrap.wrap(p["title"], width=int(12 * width / cols))))
      if p["lambda"] is None:
        ax_lam.text(0.5, 0.5, DENSE_NOTE, transform=ax_lam.transAxes, ha="center", va="center", fontsize=10,
                    color="0.3")
      for j, name in enumerate(p["layers"]):
        if p["lambda"] is not None:
          ax_lam.plot(p["steps"], np.where(p["lambda"][:, j] > 0, p["lambda"][:, j], np.nan), lw=1.3,
                      **styles[name])
        ax_alive.plot(p["steps"], p["fraction"][:, j], lw=1.3, **styles[name])
      ax_alive.set_xlabel(STEP_LABEL)
      ax_alive.xaxis.set_major_locator(
          MaxNLocator(nbins=4 if width / cols >= 2.5 else 3, steps=[1, 2, 2.5, 5, 10], integer=True))
      ax_lam.tick_params(labelbottom=False)
    for i in range(n, grid_rows * cols):  # empty slots of the last row
      row, col = divmod(i, cols)
      axes[2 * row, col].set_visible(False)
      axes[2 * row + 1, col].set_visible(False)

    for ax in lam_axes:
      ax.set_yscale("log")
    positive = [p["lambda"][(p["lambda"] > 0) & np.isfinite(p["lambda"])] for p in checked if p["lambda"] is not None]
    positive = np.concatenate(positive) if positive else np.array([])
    low, high = (positive.min(), positive.max()) if positive.size else (1e-3, 1.0)
    if high / low < 10:  # at least one decade so that the log axis has labelled ticks
      middle = math.sqrt(low * high)
      low, high = middle / math.sqrt(10), middle * math.sqrt(10)
    for ax in lam_axes[1:]:
      ax.sharey(lam_axes[0])
    lam_axes[0].set_ylim(low / 1.3, high * 1.3)
    for ax in alive_axes[1:]:
      ax.sharey(alive_axes[0])
    alive_axes[0].set_ylim(0, 1.05)
    for i, (ax_lam, ax_alive) in enumerate(zip(lam_axes, alive_axes)):
      for ax in (ax_lam, ax_alive):
        ax.grid(True, which="major", color="0.9", lw=0.6)
      if i % cols == 0:
        ax_lam.set_ylabel(LAMBDA_LABEL)
        ax_alive.set_ylabel(ALIVE_LABEL)
      else:
        ax_lam.tick_params(labelleft=False)
        ax_alive.tick_params(labelleft=False)

    handles = [Line2D([], [], lw=2.0, **styles[name]) for name in names]
    fig.legend(handles, legend_labels, loc="outside lower center", ncols=legend_cols, frameon=False,
               title="layer", title_fontsize=9, handlelength=2.4, columnspacing=1.2)
    if suptitle:
      fig.suptitle(suptitle, fontsize=11)
    fig.savefig(path, dpi=DPI)
  return fig


def segmentation_palette(num_classes: int) -> np.ndarray:
  """(num_classes, 3) floats in [0, 1]: a fixed categorical colour per class (tab10, then tab20 beyond 10)."""
  if num_classes <= 10:
    return np.asarray(colormaps["tab10"].colors[:num_classes])
  if num_classes <= 20:
    return np.asarray(colormaps["tab20"].colors[:num_classes])
  return colormaps["turbo"](np.linspace(0, 1, num_classes))[:, :3]


def _check_example(index: int, example: Mapping[str, Any]) -> dict[str, np.ndarray]:
  label = f"example {index}"
  missing = {"image", "segmentation", "depth", "normals", "edges"} - set(example)
  if missing:
    raise ValueError(f"{label} lacks {sorted(missing)}")
  arrays = {key: np.asarray(example[key]) for key in ("image", "segmentation", "depth", "normals", "edges")}
  if arrays["image"].ndim != 3 or arrays["image"].shape[2] != 3:
    raise ValueError(f"{label}: image must have shape (H, W, 3), got {arrays['image'].shape}")
  h, w = arrays["image"].shape[:2]
  for key, shape in (("segmentation", (h, w)), ("depth", (h, w)), ("normals", (h, w, 3)), ("edges", (h, w))):
    if arrays[key].shape != shape:
      raise ValueError(f"{label}: {key} has shape {arrays[key].shape}, expected {shape} (the image's H, W)")
  return arrays


def synthetic_preview(examples: Sequence[Mapping[str, Any]], class_names: Sequence[str], path: str) -> Figure:
  """A grid of scenes with their dense ground truth: one row per example, columns image, segmentation, depth,
  normals and edges, with a colour key of the classes and a depth colour bar below the grid.

  Args:
    examples: dicts of numpy arrays, all of one example sharing (H, W):
      "image": (H, W, 3) uint8 RGB;
      "segmentation": (H, W) ints, index into class_names (others, e.g. an ignore label, are drawn black and
        listed as "unlabelled");
      "depth": (H, W) floats, metres (values <= 0 or not finite are invalid, drawn grey); every row uses the same
        colour range;
      "normals": (H, W, 3) unit vectors (camera frame), drawn as RGB = (n + 1) / 2;
      "edges": (H, W) in {0, 1}, 1 drawn black on white.
    class_names: names of the segmentation classes, in label order.
    path: where the PNG goes.

  Returns:
    The Figure (also saved to `path`).

  Raises:
    ValueError: no examples or no class names, or an example whose arrays do not fit (the message names it).
  """
  if not examples:
    raise ValueError("synthetic_preview needs at least one example")
  if not class_names:
    raise ValueError("synthetic_preview needs the class names")
  checked = [_check_example(i, example) for i, example in enumerate(examples)]
  palette = segmentation_palette(len(class_names))
  valid_depths = [d[np.isfinite(d) & (d > 0)] for d in (c["depth"].astype(float) for c in checked)]
  valid_depths = np.concatenate(valid_depths) if any(v.size for v in valid_depths) else np.array([0.0, 1.0])
  depth_min, depth_max = float(valid_depths.min()), float(valid_depths.max())
  if depth_max <= depth_min:
    depth_max = depth_min + 1.0
  depth_cmap = colormaps["viridis"].with_extremes(bad="0.6")
  unlabelled = any(np.any((c["segmentation"] < 0) | (c["segmentation"] >= len(class_names))) for c in checked)

  n, cols = len(checked), len(PREVIEW_COLUMNS)
  width = 7.5
  cell = (width - 0.3) / cols
  key_rows = math.ceil((len(class_names) + unlabelled) / 3)
  key_height = 0.4 + 0.22 * key_rows
  height = 0.45 + n * cell + key_height
  with rc_context(_FONT):
    fig = _new_figure(width, height)
    grid = fig.add_gridspec(n + 1, cols, left=0.02, right=0.98, top=1 - 0.45 / height, bottom=0.02,
                            hspace=0.06, wspace=0.06, height_ratios=[cell] * n + [key_height])
    depth_image = None
    for r, c in enumerate(checked):
      seg = c["segmentation"].astype(np.int64)
      inside = (seg >= 0) & (seg < len(class_names))
      seg_rgb = np.where(inside[..., None], palette[np.clip(seg, 0, len(class_names) - 1)], 0.0)
      depth = np.ma.masked_invalid(np.where(c["depth"] > 0, c["depth"].astype(float), np.nan))
      normals = np.clip((c["normals"].astype(float) + 1) / 2, 0, 1)
      for col, title in enumerate(PREVIEW_COLUMNS):
        ax = fig.add_subplot(grid[r, col])
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
          ax.set_title(title if len(title) < 14 else title.replace(" (", "\n("), fontsize=10)
        if col == 0:
          ax.imshow(c["image"], interpolation="nearest")
        elif col == 1:
          ax.imshow(seg_rgb, interpolation="nearest")
        elif col == 2:
          depth_image = ax.imshow(depth, cmap=depth_cmap, vmin=depth_min, vmax=depth_max, interpolation="nearest")
        elif col == 3:
          ax.imshow(normals, interpolation="nearest")
        else:
          ax.imshow(c["edges"], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")

    key_ax = fig.add_subplot(grid[n, 0:2])
    key_ax.axis("off")
    key_patches = [patches.Patch(facecolor=palette[k], edgecolor="0.3", label=name)
                   for k, name in enumerate(class_names)]
    if unlabelled:
      key_patches.append(patches.Patch(facecolor="black", edgecolor="0.3", label="unlabelled"))
    key_ax.legend(handles=key_patches, loc="upper center", ncols=3, frameon=False, title="segmentation classes",
                  title_fontsize=9, fontsize=9, handlelength=1.2, columnspacing=1.0, borderaxespad=0.2)

    bar_slot = grid[n, 2].get_position(fig)
    bar_ax = fig.add_axes([bar_slot.x0 + 0.1 * bar_slot.width, bar_slot.y1 - 0.2 / height,
                           0.8 * bar_slot.width, 0.12 / height])
    bar = fig.colorbar(depth_image, cax=bar_ax, orientation="horizontal")
    bar.set_label("depth (m)", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    fig.savefig(path, dpi=DPI)
  return fig


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
FLOPS_KEPT_LABEL = "backbone FLOPs kept (fraction of the dense backbone's)"
DELTA_M_LABEL = "Δm (%) against the single-task baselines"
KEPT_LABEL = "kept channels (fraction of layer)"


def _method_styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
  """Colour and marker per method: tab10 colours in order, the marker changing with every method and shifted by one
  for each further round of ten colours, so that no two of up to 100 methods look alike."""
  colours = colormaps["tab10"].colors
  return {m: {"color": colours[i % 10], "marker": MARKERS[(i + i // 10) % len(MARKERS)]}
          for i, m in enumerate(methods)}


def _bar(std: float) -> float | None:
  """An error bar's half-length, or None where there is none (one seed: std NaN)."""
  return float(std) if np.isfinite(std) and std > 0 else None


def delta_m_front(points: Sequence[Mapping[str, Any]], stages: Sequence[str], path: str,
                  title: str | None = None) -> Figure:
  """Δm (y) against the backbone FLOPs kept (x), one colour and marker per method; the first stage drawn filled, the
  second hollow, a thin line joining a method's stages; error bars are the std over seeds in both directions.

  Args:
    points: one dict per (method, stage), with
      "method": str; "stage": one of `stages`;
      "flops_kept": (mean, std), fraction in [0, 1] of the dense backbone's FLOPs;
      "delta_m": (mean, std), percent (positive = better than the reference).
      A std that is NaN (one seed) or 0 draws no bar.
    stages: at most two stage names, in order (legend: filled = the first, hollow = the second).
    path: where the PNG goes.
    title: above the axes (None: none).

  Returns:
    The Figure (also saved to `path`).

  Raises:
    ValueError: no points, more than two stages, or a point of an unknown stage.
  """
  if not points:
    raise ValueError("delta_m_front needs at least one point")
  if not 0 < len(stages) <= 2 or any(p["stage"] not in stages for p in points):
    raise ValueError(f"stages must be one or two names covering every point's stage, got {list(stages)}")
  methods = list(dict.fromkeys(p["method"] for p in points))
  styles = _method_styles(methods)
  width = min(MAX_WIDTH_IN, max(6.4, _entry_in(methods)))
  labels, legend_cols, legend_in = _legend_below([*methods, *stages], width)
  with rc_context(_FONT):
    fig = _new_figure(width, math.ceil((4.2 + legend_in) * DPI) / DPI)  # whole pixels
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
    for method in methods:
      mine = sorted((p for p in points if p["method"] == method), key=lambda p: stages.index(p["stage"]))
      style = styles[method]
      if len(mine) == 2:
        ax.plot([p["flops_kept"][0] for p in mine], [p["delta_m"][0] for p in mine], color=style["color"], lw=0.8,
                alpha=0.6, zorder=1)
      for p in mine:
        filled = p["stage"] == stages[0]
        ax.errorbar(p["flops_kept"][0], p["delta_m"][0], xerr=_bar(p["flops_kept"][1]), yerr=_bar(p["delta_m"][1]),
                    marker=style["marker"], markersize=8, color=style["color"], ecolor=style["color"],
                    markerfacecolor=style["color"] if filled else "white", markeredgewidth=1.5, elinewidth=1.0,
                    capsize=3, linestyle="none", zorder=2)
    ax.set_xlabel(FLOPS_KEPT_LABEL)
    ax.set_ylabel(DELTA_M_LABEL)
    ax.set_xlim(0, 1.05)
    ax.grid(True, color="0.9", lw=0.6)
    handles = [Line2D([], [], linestyle="none", markersize=8, markerfacecolor=styles[m]["color"],
                      markeredgecolor=styles[m]["color"], marker=styles[m]["marker"]) for m in methods]
    handles += [Line2D([], [], linestyle="none", marker="o", markersize=8, color="0.3",
                       markerfacecolor="0.3" if i == 0 else "white", markeredgewidth=1.5)
                for i, _ in enumerate(stages)]
    fig.legend(handles, labels, loc="outside lower center", ncols=legend_cols, frameon=False, fontsize=9)
    if title:
      ax.set_title("\n".join(textwrap.wrap(title, width=60)))
    fig.savefig(path, dpi=DPI)
  return fig


def kept_channels(layers: Sequence[str], num_groups: Sequence[int], series: Sequence[Mapping[str, Any]], path: str,
                  title: str | None = None) -> Figure:
  """Kept (alive) channels per layer as a fraction of the layer's, one line with markers per method, layers in
  execution order along x, error bars the std over seeds.

  Args:
    layers: L layer names (a leading "backbone/" is left out of the tick labels).
    num_groups: (L,) ints > 0, channels of each layer in the dense network.
    series: one dict per method: "method": str; "mean": (L,) kept channels (counts, mean over seeds); "std": (L,)
      their std over seeds (NaN for one seed: no bar).
    path: where the PNG goes.
    title: above the axes (None: none).

  Returns:
    The Figure (also saved to `path`).

  Raises:
    ValueError: no series, or arrays whose shapes do not match `layers`.
  """
  if not series:
    raise ValueError("kept_channels needs at least one series")
  groups = np.asarray(num_groups, np.float64)
  l = len(layers)
  if groups.shape != (l,) or np.any(groups <= 0):
    raise ValueError(f"num_groups must be ({l},) positive counts, got {groups.tolist()}")
  for s in series:
    if np.shape(s["mean"]) != (l,) or np.shape(s["std"]) != (l,):
      raise ValueError(f"series {s['method']!r}: mean and std must have shape ({l},) (one entry per layer)")
  styles = _method_styles([s["method"] for s in series])
  label_in = 0.075 * max(len(_short(n)) for n in layers)  # rotated tick labels at 8 pt
  width = min(MAX_WIDTH_IN, max(5.0, 2.2 + 0.28 * l, _entry_in([s["method"] for s in series])))
  labels, legend_cols, legend_in = _legend_below([s["method"] for s in series], width)
  with rc_context(_FONT):
    fig = _new_figure(width, math.ceil((3.2 + 0.75 * label_in + legend_in) * DPI) / DPI)  # whole pixels
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    x = np.arange(l)
    for s, label in zip(series, labels):
      std = np.asarray(s["std"], np.float64)
      ax.errorbar(x, np.asarray(s["mean"], np.float64) / groups,
                  yerr=np.where(np.isfinite(std), std, 0.0) / groups, label=label, lw=1.2, markersize=5,
                  capsize=2, elinewidth=0.8, markerfacecolor="white", markeredgewidth=1.2, **styles[s["method"]])
    step = max(1, math.ceil(l / 30))  # at most ~30 labelled ticks
    ax.set_xticks(x[::step], [_short(n) for n in layers][::step], rotation=60, ha="right", rotation_mode="anchor")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(KEPT_LABEL)
    ax.grid(True, color="0.9", lw=0.6)
    fig.legend(loc="outside lower center", ncols=legend_cols, frameon=False, fontsize=9)
    if title:
      ax.set_title("\n".join(textwrap.wrap(title, width=int(12 * width))))
    fig.savefig(path, dpi=DPI)
  return fig
