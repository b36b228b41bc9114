"""Figures sized to be read where they are shown: a GitHub README column, about 830 px wide.

Every function saves a PNG and returns the matplotlib Figure (for tests and further editing). Figures are drawn on
their own Agg canvas, without pyplot, so importing this module changes no global backend and a returned figure is
freed when it is no longer referenced.

Sizing rule: at most MAX_WIDTH_IN inches wide at DPI dots per inch (960 px), so a README shows them at >= 86 % of
their size; fonts are 9-10 pt, i.e. >= 13 px on screen there. At most MAX_SERIES colours in a panel and entries in
a legend: more cannot be told apart at that size, so many methods are spread over panels, and many layers share
their stage's colour.
"""
import math
import re
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
MAX_SERIES = 8
ROLE_STYLES = ("-", "--", ":", "-.", (0, (6, 2, 1, 2, 1, 2)))  # the last: dash-dot-dot
PREVIEW_COLUMNS = ("image", "segmentation", "depth (m)", "normals (x,y,z → RGB)", "edges")
_FONT = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 9}


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=DPI)
  FigureCanvasAgg(fig)
  return fig


def _short(name: str) -> str:
  return name.removeprefix("backbone/")


# a 9 pt legend: an entry's handle and each character of its label (widths), a line of text and the space between
# rows of entries (heights)
LEGEND_HANDLE_IN, LEGEND_CHAR_IN, LEGEND_LINE_IN, LEGEND_ROW_GAP_IN = 0.6, 0.068, 0.17, 0.02


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
  """A legend `width_in` wide: (labels wrapped to fit it, columns, height in inches)."""
  max_chars = max(12, int((width_in - LEGEND_HANDLE_IN) / LEGEND_CHAR_IN))
  wrapped = [_wrap_label(label, max_chars) for label in labels]
  cols = max(1, min(len(labels), int(width_in // _entry_in(wrapped))))
  lines = sum(max(label.count("\n") + 1 for label in wrapped[i:i + cols]) for i in range(0, len(wrapped), cols))
  return wrapped, cols, LEGEND_LINE_IN * lines + LEGEND_ROW_GAP_IN * math.ceil(len(labels) / cols) + 0.05


def _stage_and_role(name: str) -> tuple[str, str]:
  """(stage, role) of a layer: "backbone/stage2_block0/shortcut" → ("stage2", "shortcut"), "stage0_conv1" →
  ("stage0", "conv1"), a tied stream "stage2_stream" → ("stage2", "stream"); a name without "stage<N>" is a stage
  of its own, of role ""."""
  match = re.fullmatch(r"(?:.*/)?(stage\d+)[_/](.+)", name)
  return (match[1], match[2].rsplit("/", 1)[-1]) if match else (name, "")


def _layer_styles(names: Sequence[str]) -> tuple[dict[str, dict[str, Any]], list[tuple[str, Any]],
                                                 list[tuple[str, Any]]]:
  """Each layer's colour (its stage's) and line style (its role's), and the two keys: ({name: {"color",
  "linestyle"}}, [(stage, colour)], [(role, line style)]). Stages get tab10 colours in order; beyond MAX_SERIES
  stages, consecutive ones share a colour ("stage0 … stage1"), so that a panel has at most MAX_SERIES colours. The
  role key is empty where it would tell nothing: one role, or more roles than ROLE_STYLES (then all solid)."""
  parsed = {name: _stage_and_role(_short(name)) for name in names}
  stages = list(dict.fromkeys(stage for stage, _ in parsed.values()))
  per_colour = math.ceil(len(stages) / MAX_SERIES)
  bins = [stages[i:i + per_colour] for i in range(0, len(stages), per_colour)]
  colours = colormaps["tab10"].colors
  colour_of = {stage: colours[i] for i, group in enumerate(bins) for stage in group}
  stage_key = [(group[0] if len(group) == 1 else f"{group[0]} … {group[-1]}", colours[i])
               for i, group in enumerate(bins)]
  roles = list(dict.fromkeys(role for _, role in parsed.values()))
  style_of = dict(zip(roles, ROLE_STYLES)) if len(roles) <= len(ROLE_STYLES) else {}
  role_key = [(role or "other", style_of[role]) for role in roles] if len(style_of) > 1 else []
  styles = {name: {"color": colour_of[stage], "linestyle": style_of.get(role, "-")}
            for name, (stage, role) in parsed.items()}
  return styles, stage_key, role_key


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
      "layers": L layer names, e.g. "backbone/stage2_block0/conv1": each drawn in its stage's colour (stage2) with
        its role's line style (conv1; see `_layer_styles`), the same in every panel;
      "lambda": (S, L) floats >= 0, the penalty strength of each layer at each record, dimensionless; or None for a
        dense run (the λ panel then says "no sparsity (λ = 0)");
      "alive": (S, L) ints, alive (non-zero) channels of each layer at each record;
      "num_groups": (L,) ints, channels (groups) of each layer; alive is drawn as alive / num_groups in [0, 1].
      S and L may differ between panels.
    path: where the PNG goes.
    suptitle: title above all panels (None: none).

  Layout: panels side by side, each λ above alive, about PANEL_WIDTH_IN inches wide and at most MAX_WIDTH_IN in all;
  more than MAX_PANELS_PER_ROW panels wrap into several rows. All λ axes share one y-range (log scale), all alive
  axes 0–1.05. Below the panels, two keys: the stages' colours and the roles' line styles (layers of one stage and
  role, in different blocks, look alike).

  Returns:
    The Figure (also saved to `path`).

  Raises:
    ValueError: no panels, or a panel whose arrays do not have the shapes above (the message names the panel).
  """
  if not panels:
    raise ValueError("lambda_and_alive needs at least one panel")
  checked = [_check_panel(i, panel) for i, panel in enumerate(panels)]
  names = list(dict.fromkeys(name for p in checked for name in p["layers"]))
  styles, stage_key, role_key = _layer_styles(names)
  parsed = {_stage_and_role(_short(name)) for name in names}
  alike, staged = len(parsed) < len(names), any(role for _, role in parsed)

  n = len(checked)
  grid_rows = math.ceil(n / MAX_PANELS_PER_ROW)
  cols = math.ceil(n / grid_rows)
  width = min(MAX_WIDTH_IN, PANEL_WIDTH_IN * cols + 0.9)
  keys = [key for key in (stage_key, role_key) if key]
  entry_in = [_entry_in([label for label, _ in key]) for key in keys]
  if sum(e * len(key) for e, key in zip(entry_in, keys)) <= width - 0.3:  # the keys side by side, one row each
    key_cols = [len(key) for key in keys]
  else:
    key_cols = [max(1, min(len(key), int((width - 0.3) / len(keys) // e))) for e, key in zip(entry_in, keys)]
  key_rows = max(math.ceil(len(key) / c) for key, c in zip(keys, key_cols))
  key_in = (LEGEND_LINE_IN + LEGEND_ROW_GAP_IN) * (key_rows + 1)  # + 1: the keys' titles
  height = grid_rows * 4.4 + (0.35 if suptitle else 0) + key_in + 0.35

  with rc_context(_FONT):
    fig = _new_figure(width, math.ceil(height * DPI) / DPI)  # whole pixels
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

    titles = ["colour: stage" if staged else "colour: layer", "line: conv of the block"][:len(keys)]
    if alike:
      titles[-1] += " (a stage's blocks alike)"
    places = ["outside lower center"] if len(keys) == 1 else ["outside lower left", "outside lower right"]
    for key, title, place, ncols in zip(keys, titles, places, key_cols):
      handles = [Line2D([], [], lw=2.0, **({"color": style, "linestyle": "-"} if key is stage_key else
                                             {"color": "0.25", "linestyle": style})) for _, style in key]
      fig.legend(handles, [label for label, _ in key], loc=place, ncols=ncols, frameon=False, title=title,
                 title_fontsize=9, handlelength=2.4, columnspacing=1.2)
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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # the i-th series of a panel: i-th tab10 colour, i-th marker
FLOPS_KEPT_LABEL = "backbone FLOPs kept (fraction of the dense backbone's)"
DELTA_M_LABEL = "Δm (%) against the single-task baselines"
KEPT_LABEL = "kept channels (fraction of layer)"
REFERENCE_GID = "reference"  # gid of a front panel's grey marks: the line Δm = 0, the other panels' points
PANEL_HEIGHT_IN = 2.6  # axes of a panel of method panels two to a row


def _family(label: str) -> str:
  """A method label's family: its text before the first "," or "+" ("budget" of "budget,flops=0.25+steps=1200")."""
  return re.split(r"[,+]", label, maxsplit=1)[0]


def _method_panels(methods: Sequence[str]) -> list[tuple[str, list[str]]]:
  """`methods` spread over panels of at most MAX_SERIES: (families named, methods) per panel. A family stays whole
  and joins the first panel with room for it; one of more than MAX_SERIES labels is sorted (so that a panel holds
  similar labels) and split evenly over panels of its own ("budget (2 of 5)"), which later families may fill up."""
  families = {}
  for method in methods:
    families.setdefault(_family(method), []).append(method)
  panels = []
  for family, members in families.items():
    parts = math.ceil(len(members) / MAX_SERIES)
    members = sorted(members) if parts > 1 else members
    bounds = [round(i * len(members) / parts) for i in range(parts + 1)]
    for i in range(parts):
      name, chunk = family if parts == 1 else f"{family} ({i + 1} of {parts})", members[bounds[i]:bounds[i + 1]]
      room = [k for k, (_, held) in enumerate(panels) if len(held) + len(chunk) <= MAX_SERIES] if parts == 1 else []
      if room:
        panels[room[0]] = (f"{panels[room[0]][0]}, {name}", panels[room[0]][1] + chunk)
      else:
        panels.append((name, chunk))
  return panels


def _label_parts(label: str) -> list[str]:
  """A method label cut into its family, its ",KEY=VALUE" options and its "+KEY=VALUE" overrides."""
  head, *overrides = label.split("+")
  family, *options = head.split(",")
  return [family, *(f",{o}" for o in options), *(f"+{o}" for o in overrides)]


def _less_shared_parts(methods: Sequence[str]) -> tuple[list[str], str]:
  """(legend labels, shared): one panel's method labels less the parts (`_label_parts`) that all of them have, and
  those parts. A label made only of shared parts stays whole; where taking them out would make two labels alike (or
  leave all whole), all stay whole and shared is ""."""
  parts = [_label_parts(method) for method in methods]
  shared = [p for p in parts[0] if all(p in others for others in parts[1:])] if len(methods) > 1 else []
  labels = ["".join(p for p in mine if p not in shared).removeprefix(",") or method
            for method, mine in zip(methods, parts)]
  if not shared or len(set(labels)) < len(labels) or labels == list(methods):
    return list(methods), ""
  return labels, "".join(shared)


def _method_layout(methods: Sequence[str], width_in: float) -> dict[str, Any]:
  """How the method panels of a figure are laid out: "panels" (`_method_panels`), "cols" (two to a row where there
  are several), "width" (inches: `width_in` for one panel, else MAX_WIDTH_IN), and per panel its "titles" (the
  families where there are several panels; the label parts all its methods share) and legend ("labels" wrapped to
  the panel's width, "legend_cols"), and per row of panels the height of its tallest legend ("row_legend_in",
  inches) and the lines of its longest title ("row_title_lines")."""
  panels = _method_panels(methods)
  cols = 1 if len(panels) == 1 else 2
  width = width_in if cols == 1 else MAX_WIDTH_IN
  layout = {"panels": panels, "cols": cols, "width": width, "titles": [], "labels": [], "legend_cols": []}
  legend_in = []
  for name, members in panels:
    labels, shared = _less_shared_parts(members)
    lines = [name] if cols > 1 else []
    if shared and (cols == 1 or shared != _family(shared)):  # a family alone is in the title already
      lines.append(_wrap_label(f"all: {shared}", int((width / cols - 0.5) / LEGEND_CHAR_IN)))
    wrapped, legend_cols, height = _legend_below(labels, width / cols)
    layout["titles"].append("\n".join(lines))
    layout["labels"].append(wrapped)
    layout["legend_cols"].append(legend_cols)
    legend_in.append(height)
  rows = [slice(start, start + cols) for start in range(0, len(panels), cols)]
  layout["row_legend_in"] = [max(legend_in[row]) for row in rows]
  layout["row_title_lines"] = [max(t.count("\n") + 1 if t else 0 for t in layout["titles"][row]) for row in rows]
  return layout


def _panel_grid(fig: Figure, layout: Mapping[str, Any], axes_in: float) -> tuple[list[Any], list[Any]]:
  """The method panels of `layout` on `fig`, in rows of layout["cols"], each above a slot (an axes without axis)
  for its legend as tall as the tallest legend of the row; a panel is at least as tall as that legend.
  Returns (panel axes, legend slots)."""
  n, cols = len(layout["panels"]), layout["cols"]
  heights = [h for legend_in in layout["row_legend_in"] for h in (max(axes_in, legend_in), legend_in)]
  grid = fig.add_gridspec(len(heights), cols, height_ratios=heights)
  axes = [fig.add_subplot(grid[2 * (i // cols), i % cols]) for i in range(n)]
  slots = [fig.add_subplot(grid[2 * (i // cols) + 1, i % cols]) for i in range(n)]
  for slot in slots:
    slot.axis("off")
  return axes, slots


def _panel_legend(slot: Any, handles: Sequence[Any], labels: Sequence[str], ncols: int) -> None:
  slot.legend(handles, labels, loc="upper center", ncols=ncols, frameon=False, fontsize=9, borderaxespad=0,
              columnspacing=1.2)


def _rows_in(layout: Mapping[str, Any], axes_in: float, decoration_in: float) -> float:
  """Height (inches) of the rows of `_panel_grid`: each row's axes, legend and `decoration_in` plus its titles."""
  return sum(max(axes_in, legend_in) + legend_in + decoration_in + 0.2 * title_lines
             for legend_in, title_lines in zip(layout["row_legend_in"], layout["row_title_lines"]))


def _bar(std: float) -> float | None:
  """An error bar's half-length, or None where there is none (one seed: std NaN)."""
  return float(std) if np.isfinite(std) and std > 0 else None


def _finish_panel(ax, i: int, slot, handles: list, layout: dict, ylabel: str) -> None:
  """Panel i of a faceted figure: its legend in `slot`, its title, a grid, and the y label on a row's first panel."""
  _panel_legend(slot, handles, layout["labels"][i], layout["legend_cols"][i])
  if layout["titles"][i]:
    ax.set_title(layout["titles"][i], fontsize=9)
  ax.grid(True, color="0.9", lw=0.6)
  if i % layout["cols"] == 0:
    ax.set_ylabel(ylabel)
  else:
    ax.tick_params(labelleft=False)


def delta_m_front(points: Sequence[Mapping[str, Any]], stages: Sequence[str], path: str,
                  title: str | None = None) -> Figure:
  """Δm (y) against the backbone FLOPs kept (x), the methods spread over panels of at most MAX_SERIES
  (`_method_panels`: by family), one colour and marker per method within a panel; the first stage drawn filled, the
  second hollow, a thin line joining a method's stages; error bars are the std over seeds in both directions. Every
  panel has the same axes, and shows the other panels' points as small light-grey dots (gid REFERENCE_GID), so that
  each shows the whole front.

  Args:
    points: one dict per (method, stage), with
      "method": str; "stage": one of `stages`;
      "flops_kept": (mean, std), fraction in [0, 1] of the dense backbone's FLOPs;
      "delta_m": (mean, std), percent (positive = better than the reference).
      A std that is NaN (one seed) or 0 draws no bar.
    stages: at most two stage names, in order.
    path: where the PNG goes.
    title: above the panels (None: none).

  Layout: one panel ~6.4 inches wide, or panels two to a row MAX_WIDTH_IN wide; below each panel its legend (the
  methods; the label parts that all of them share are said once, in the panel's title), below all a key of the
  stages (filled = the first, hollow = the second) and of the grey dots.

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
  layout = _method_layout(methods, min(MAX_WIDTH_IN, max(6.4, _entry_in(methods))))
  axes_in = 3.6 if layout["cols"] == 1 else PANEL_HEIGHT_IN
  height = _rows_in(layout, axes_in, 0.55) + (0.35 if title else 0) + 2 * LEGEND_LINE_IN + 0.2
  with rc_context(_FONT):
    fig = _new_figure(layout["width"], math.ceil(height * DPI) / DPI)  # whole pixels
    fig.set_layout_engine("constrained")
    axes, slots = _panel_grid(fig, layout, axes_in)
    colours = colormaps["tab10"].colors
    for i, (ax, slot, (_, members)) in enumerate(zip(axes, slots, layout["panels"])):
      others = [p for p in points if p["method"] not in members]
      if others:
        ax.plot([p["flops_kept"][0] for p in others], [p["delta_m"][0] for p in others], linestyle="none",
                marker="o", markersize=3.5, color="0.8", zorder=0, gid=REFERENCE_GID)
      ax.axhline(0.0, color="0.6", lw=0.8, zorder=0, gid=REFERENCE_GID)
      for j, method in enumerate(members):
        mine = sorted((p for p in points if p["method"] == method), key=lambda p: stages.index(p["stage"]))
        if len(mine) == 2:
          ax.plot([p["flops_kept"][0] for p in mine], [p["delta_m"][0] for p in mine], color=colours[j], lw=0.8,
                  alpha=0.6, zorder=1)
        for p in mine:
          filled = p["stage"] == stages[0]
          ax.errorbar(p["flops_kept"][0], p["delta_m"][0], xerr=_bar(p["flops_kept"][1]),
                      yerr=_bar(p["delta_m"][1]), marker=MARKERS[j], markersize=7, color=colours[j],
                      markerfacecolor=colours[j] if filled else "white", markeredgewidth=1.5, elinewidth=1.0,
                      capsize=3, linestyle="none", zorder=2)
      handles = [Line2D([], [], linestyle="none", markersize=7, color=colours[j], marker=MARKERS[j])
                 for j in range(len(members))]
      _finish_panel(ax, i, slot, handles, layout, DELTA_M_LABEL)
      ax.set_xlabel(FLOPS_KEPT_LABEL)
      if i:
        ax.sharex(axes[0])
        ax.sharey(axes[0])
    axes[0].set_xlim(0, 1.05)
    keys = [Line2D([], [], linestyle="none", marker="o", markersize=7, color="0.3",
                   markerfacecolor="0.3" if i == 0 else "white", markeredgewidth=1.5) for i, _ in enumerate(stages)]
    names = list(stages)
    if len(axes) > 1:
      keys.append(Line2D([], [], linestyle="none", marker="o", markersize=3.5, color="0.8"))
      names.append("the other panels' methods")
    fig.legend(keys, names, loc="outside lower center", ncols=len(names), frameon=False, fontsize=9)
    if title:
      fig.suptitle("\n".join(textwrap.wrap(title, width=int(12 * layout["width"]))), fontsize=11)
    fig.savefig(path, dpi=DPI)
  return fig


def kept_channels(layers: Sequence[str], num_groups: Sequence[int], series: Sequence[Mapping[str, Any]], path: str,
                  title: str | None = None) -> Figure:
  """Kept (alive) channels per layer as a fraction of the layer's, layers in execution order along x; the methods
  spread over panels of at most MAX_SERIES (`_method_panels`: by family), one line with markers per method, a
  colour and marker each within a panel; error bars the std over seeds.

  Args:
    layers: L layer names (a leading "backbone/" is left out of the tick labels).
    num_groups: (L,) ints > 0, channels of each layer in the dense network.
    series: one dict per method: "method": str; "mean": (L,) kept channels (counts, mean over seeds); "std": (L,)
      their std over seeds (NaN for one seed: no bar).
    path: where the PNG goes.
    title: above the panels (None: none).

  Layout: one panel, or panels two to a row MAX_WIDTH_IN wide, all with the same axes (y 0–1.05); below each its
  legend (the methods; the label parts that all of them share are said once, in the panel's title).

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
  by_method = {s["method"]: s for s in series}
  layout = _method_layout(list(by_method), min(MAX_WIDTH_IN, max(5.0, 2.2 + 0.28 * l, _entry_in(list(by_method)))))
  axes_in = 3.2 if layout["cols"] == 1 else PANEL_HEIGHT_IN
  label_in = 0.075 * max(len(_short(n)) for n in layers)  # rotated tick labels at 8 pt
  height = _rows_in(layout, axes_in, 0.75 * label_in + 0.1) + (0.35 if title else 0)
  x = np.arange(l)
  step = max(1, math.ceil(l / int((layout["width"] / layout["cols"] - 0.8) / 0.14)))  # ticks >= 0.14 in apart
  colours = colormaps["tab10"].colors
  with rc_context(_FONT):
    fig = _new_figure(layout["width"], math.ceil(height * DPI) / DPI)  # whole pixels
    fig.set_layout_engine("constrained")
    axes, slots = _panel_grid(fig, layout, axes_in)
    for i, (ax, slot, (_, members)) in enumerate(zip(axes, slots, layout["panels"])):
      handles = []
      for j, method in enumerate(members):
        std = np.asarray(by_method[method]["std"], np.float64)
        handles.append(ax.errorbar(x, np.asarray(by_method[method]["mean"], np.float64) / groups,
                                   yerr=np.where(np.isfinite(std), std, 0.0) / groups, lw=1.2, markersize=5,
                                   capsize=2, elinewidth=0.8, color=colours[j], marker=MARKERS[j],
                                   markerfacecolor="white", markeredgewidth=1.2))
      _finish_panel(ax, i, slot, handles, layout, KEPT_LABEL)
      ax.set_xticks(x[::step], [_short(n) for n in layers][::step], rotation=60, ha="right", rotation_mode="anchor")
      if i:
        ax.sharey(axes[0])
    axes[0].set_ylim(0, 1.05)
    if title:
      fig.suptitle("\n".join(textwrap.wrap(title, width=int(12 * layout["width"]))), fontsize=11)
    fig.savefig(path, dpi=DPI)
  return fig
