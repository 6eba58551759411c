"""The report's figures, in convkit.plotting's style and written by its one save (atomic, byte-stable).

Per-run figures (about five per run) set their margins by hand: matplotlib's constrained layout was a quarter
of the report's time. The few suite-wide figures pass ``layout="constrained"`` to ``new_figure``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter

from convkit.plotting import new_figure, save

PRECISION_STYLE = {"fp32": ("o", "tab:blue"), "fp16": ("s", "tab:orange"), "int8": ("^", "tab:green")}
MAX_TICK_LABELS = 30
LINESTYLES = ("-", "--", "-.", ":")


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["epoch"], r[key]) for r in history if isinstance(r.get("epoch"), float) and isinstance(r.get(key), float)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _epoch_axis(ax, history: list[dict]) -> None:
    epochs = [r["epoch"] for r in history if isinstance(r.get("epoch"), float)]
    if epochs and len(epochs) <= 20:
        ax.set_xticks(sorted(set(epochs)))
    ax.set_xlabel("epoch")


def learning_curves(history: list[dict], title: str, path: Path) -> Path:
    """Write loss and accuracy per epoch, train vs test, side by side; returns the PNG path."""
    fig = new_figure(9, 3.4)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.86, bottom=0.15, wspace=0.25)
    for ax, key, name in zip(fig.subplots(1, 2), ("loss", "acc"), ("cross-entropy loss", "accuracy")):
        for split, ls in (("train", "-"), ("test", "--")):
            x, y = _series(history, f"{split}_{key}")
            ax.plot(x, y, ls, marker="o", ms=4, label=split)
        ax.set_ylabel(name)
        _epoch_axis(ax, history)
        ax.legend()
    fig.suptitle(title)
    return save(fig, path)


def overlay(rows: list[tuple[str, list[dict], float | None]], title: str, path: Path,
            bands: dict[str, list[list[dict]]] | None = None) -> Path:
    """Write every row's test accuracy per epoch in one axes, the study's final accuracy dotted; returns the path.

    A row with several seeds in ``bands`` (label → each seed's history) is drawn as its per-epoch mean with the
    seeds' min–max shaded."""
    fig = new_figure(8, 4.2, layout="constrained")
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"].colors
    for i, (label, history, study) in enumerate(rows):
        c = colors[i % len(colors)]
        x, y = _series(history, "test_acc")
        seeds = (bands or {}).get(label) or []
        if len(seeds) > 1:
            x, y, low, high = _band(seeds)
            ax.fill_between(x, low, high, color=c, alpha=0.2, lw=0)
            label = f"{label}, mean of {len(seeds)} seeds (min–max shaded)"
        ax.plot(x, y, marker="o", ms=4, color=c, label=f"{label} (study {study * 100:.2f} %)" if study else label)
        if study is not None:
            ax.axhline(study, color=c, ls=":", lw=1.2)
    ax.plot([], [], "k:", lw=1.2, label="study (final)")
    _epoch_axis(ax, [r for _, h, _ in rows for r in h])
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save(fig, path)


def _band(histories: list[list[dict]]) -> tuple[list, list, list, list]:
    """Return (epochs, mean, min, max) of test accuracy over the epochs every history has."""
    series = [dict(zip(*_series(h, "test_acc"))) for h in histories]
    epochs = sorted(set.intersection(*(set(s) for s in series)))
    values = np.array([[s[e] for e in epochs] for s in series], dtype=float)
    return epochs, list(values.mean(axis=0)), list(values.min(axis=0)), list(values.max(axis=0))


def confused_pairs(cm: list[list[int]], classes: list[str], top: int = 6) -> list[tuple[str, str, int]]:
    """Return the ``top`` largest off-diagonal cells as (true class, predicted class, count), ties by class order."""
    cells = [(-int(n), i, j) for i, row in enumerate(cm) for j, n in enumerate(row) if i != j and n > 0]
    return [(classes[i], classes[j], -n) for n, i, j in sorted(cells)[:top]]


def confusion(cm: list[list[int]], classes: list[str], title: str, path: Path) -> Path:
    """Write the confusion matrix (counts, rows true) with the most confused pairs listed beside it."""
    m = np.asarray(cm, dtype=float)
    fig = new_figure(9.4, 5.6)
    fig.subplots_adjust(left=0.11, right=0.99, top=0.94, bottom=0.17, wspace=0.1)
    ax, side = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.4]})
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(m):
        if n:
            ax.text(j, i, f"{int(n)}", ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.grid(False)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    side.axis("off")
    pairs = confused_pairs(cm, classes)
    lines = ["most confused", "(true → predicted):", ""] + [f"{t} → {p}: {n}" for t, p, n in pairs]
    side.text(0, 1, "\n".join(lines if pairs else ["no confusions"]), va="top", fontsize=9, family="monospace",
              transform=side.transAxes)
    ax.set_title(title)
    return save(fig, path)


def _unit(a: np.ndarray) -> np.ndarray:
    """Min-max scale to 0..1 (zeros when constant)."""
    a = a.astype(float)
    return (a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else np.zeros_like(a)


def _tile(tiles: list[np.ndarray], gap: int = 2) -> tuple[np.ndarray, list[float]]:
    """Return tiles ([H, W] or [H, W, 3], equal sizes) side by side with NaN/white gaps, and each tile's centre x."""
    h, w = tiles[0].shape[:2]
    shape = (h, len(tiles) * (w + gap) - gap) + tiles[0].shape[2:]
    out = np.full(shape, 1.0 if tiles[0].ndim == 3 else np.nan)
    for i, t in enumerate(tiles):
        out[:, i * (w + gap): i * (w + gap) + w] = t
    return out, [i * (w + gap) + (w - 1) / 2 for i in range(len(tiles))]


def _mosaic_row(ax, tiles: list[np.ndarray], labels: list[str], xlabel: str, **imshow) -> None:
    """Draw ``tiles`` as one image in ``ax`` (one image per row keeps the figure cheap), labelled per tile."""
    img, centres = _tile(tiles)
    ax.imshow(img, **imshow)
    ax.set_xticks(centres, labels, fontsize=8)
    ax.set_yticks([])
    ax.tick_params(length=0)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)


def _picture(a: np.ndarray) -> np.ndarray:
    """[C, H, W] → RGB [H, W, 3] in 0..1 for 3 channels, else the channel mean [H, W] in 0..1."""
    return _unit(a).transpose(1, 2, 0) if a.shape[0] == 3 else _unit(a.mean(axis=0))


def _channels_note(n_in: int) -> str:
    return {1: "grayscale", 3: "RGB"}.get(n_in, f"mean over {n_in} inputs")


def first_conv(view: dict, image: np.ndarray, caption: str, title: str, path: Path, channels: int = 8,
               what: str = "first conv") -> Path:
    """Write the fixed image, the conv's filters (top row) and its pre-activation maps (bottom row); ``what``
    names the layer in the title ("first conv", or the k×k conv a kernel-size row is about)."""
    w, maps = view["weights"], view["maps"]
    n = min(channels, w.shape[0])
    size = maps.shape[-1]
    f = max(1, size // w.shape[-1])  # filters enlarged to about the maps' size, pixels kept square
    filters = [np.kron(_picture(w[c]), np.ones((f, f, 1)) if w.shape[1] == 3 else np.ones((f, f))) for c in range(n)]
    fig = new_figure(11, 3.9)
    gs = fig.add_gridspec(2, 2, width_ratios=[1, n * 1.06], left=0.02, right=0.99, top=0.86, bottom=0.1,
                          wspace=0.05, hspace=0.45)
    ax_img = fig.add_subplot(gs[:, 0])
    ax_img.imshow(_picture(image) if image.shape[0] == 3 else image[0], cmap="gray")
    ax_img.set_title(caption, fontsize=9)
    ax_img.axis("off")
    gray = {"cmap": "gray"} if w.shape[1] != 3 else {}
    _mosaic_row(fig.add_subplot(gs[0, 1]), filters, [str(c) for c in range(n)],
                f"filters {w.shape[2]}×{w.shape[3]} (output channel; {_channels_note(w.shape[1])}, "
                "min–max scaled each)",
                **gray)
    lim = max(float(np.abs(maps[:n]).max()), 1e-12)
    _mosaic_row(fig.add_subplot(gs[1, 1]), [maps[c] for c in range(n)], [str(c) for c in range(n)],
                "activation maps before the nonlinearity (channel; red > 0 > blue, one scale)",
                cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.suptitle(f"{title}: {what} `{view['layer']}`, {w.shape[0]} filters, {w.shape[1]} input channel(s)")
    return save(fig, path)


def stage_maps(stages: list[tuple[str, np.ndarray]], title: str, path: Path, channels: int = 8) -> Path:
    """Write one row per stage: the ``channels`` most active feature maps after it (largest mean |activation|)."""
    fig = new_figure(11, 1.45 * len(stages) + 0.7)
    fig.subplots_adjust(left=0.16, right=0.99, top=1 - 0.5 / fig.get_figheight(), bottom=0.04, hspace=0.55)
    axes = fig.subplots(len(stages), 1, squeeze=False)[:, 0]
    for ax, (name, fmap) in zip(axes, stages):
        strength = np.abs(fmap).mean(axis=(1, 2))
        picked = sorted(np.argsort(-strength, kind="stable")[:channels].tolist())
        _mosaic_row(ax, [_unit(fmap[c]) for c in picked], [f"ch {c}" for c in picked], "", cmap="viridis")
        ax.set_ylabel(f"after {name}\n{fmap.shape[0]}×{fmap.shape[1]}×{fmap.shape[2]}", fontsize=8, rotation=0,
                      ha="right", va="center")
    fig.suptitle(title + " — 8 most active channels per stage, each scaled to its own range")
    return save(fig, path)


def _layer_norms(rows: list[dict]) -> tuple[list[str], dict[float, dict[str, float]]]:
    """Per-layer gradient norm (√Σ of its parameters' squared norms) per epoch, layers in first-seen order."""
    layers: OrderedDict[str, None] = OrderedDict()
    per_epoch: dict[float, dict[str, float]] = {}
    for r in rows:
        p, e, g = r.get("parameter"), r.get("epoch"), r.get("grad_norm")
        if not isinstance(p, str) or not isinstance(e, float) or not isinstance(g, float):
            continue
        layer = p.rsplit(".", 1)[0] if "." in p else p
        layers.setdefault(layer, None)
        d = per_epoch.setdefault(e, {})
        d[layer] = d.get(layer, 0.0) + g * g
    return list(layers), {e: {k: v ** 0.5 for k, v in d.items()} for e, d in per_epoch.items()}


def gradient_flow(rows: list[dict], title: str, path: Path, keep: dict[str, str] | None = None) -> Path | None:
    """Write per-layer gradient norms (log scale), input→output, one line per epoch; None when there are none.

    ``keep`` ({layer name: type}), when given, restricts the plot to those layers: the caller passes the conv
    and linear layers, because normalization layers' smaller norms would zigzag the line between every pair.
    Index-only names (nn.Sequential's "3") get their type in the tick label.
    """
    layers, per_epoch = _layer_norms(rows)
    dropped = 0
    if keep is not None and any(l in keep for l in layers):
        dropped = sum(1 for l in layers if l not in keep)
        layers = [l for l in layers if l in keep]
    if not layers:
        return None
    fig = new_figure(9, 4.6)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.92, bottom=0.35)
    ax = fig.subplots()
    epochs = sorted(per_epoch)
    cmap = matplotlib.colormaps["viridis"]
    for i, e in enumerate(epochs):
        y = [per_epoch[e].get(l, np.nan) for l in layers]
        ax.plot(range(len(layers)), y, marker="o", ms=3, color=cmap(i / max(1, len(epochs) - 1)),
                label=f"epoch {int(e)}")
    ax.set_yscale("log")
    # label some minor ticks too: gradient norms often span under two decades, which leaves one major label
    ax.yaxis.set_major_formatter(FuncFormatter(_plain_number))
    ax.yaxis.set_minor_formatter(FuncFormatter(_minor_2_5))
    step = max(1, -(-len(layers) // MAX_TICK_LABELS))
    names = [f"{l} {keep[l]}" if keep and l in keep and l.rsplit(".", 1)[-1].isdigit() else l for l in layers]
    names = [n if len(n) <= 24 else "…" + n[-23:] for n in names]  # long paths would push the axis label out
    ax.set_xticks(range(0, len(layers), step), names[::step], rotation=60, ha="right", fontsize=7)
    ax.set_xlabel(("conv / linear layer" if dropped else "layer") + " (input → output)")
    ax.set_ylabel("mean gradient L2 norm per step")
    ax.set_title(title + (f" ({dropped} normalization/other layers not shown)" if dropped else ""))
    if len(epochs) <= 12:
        ax.legend(ncols=2)
    return save(fig, path)


def reliability(curves: list[tuple[str, dict]], title: str, path: Path) -> Path | None:
    """Write a reliability diagram (accuracy vs confidence per bin) with counts below; None without bins."""
    curves = [(k, c) for k, c in curves if isinstance(c.get("bins"), list) and c["bins"]]
    if not curves:
        return None
    fig = new_figure(5.6, 5.2)
    fig.subplots_adjust(left=0.14, right=0.97, top=0.93, bottom=0.1, hspace=0.08)
    ax, cnt = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    for i, (label, cal) in enumerate(curves):
        bins = [b for b in cal["bins"] if b.get("count")]
        mids = [(b["lo"] + b["hi"]) / 2 for b in cal["bins"]]
        width = (cal["bins"][0]["hi"] - cal["bins"][0]["lo"])
        ece = cal.get("ece")
        name = f"{label} (ECE {ece:.3f})" if isinstance(ece, (int, float)) else label
        if i == 0:
            ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=width * 0.95,
                   color="tab:blue", alpha=0.6, edgecolor="tab:blue", label=name)
            cnt.bar(mids, [b.get("count", 0) for b in cal["bins"]], width=width * 0.95, color="tab:gray")
        else:
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", ms=4, label=name)
    ax.set_ylabel("accuracy in bin")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(title)
    cnt.set_xlabel("confidence (top-class probability)")
    cnt.set_ylabel("images")
    return save(fig, path)


def receptive_field_plot(panels: list[tuple[str, list[tuple[str, list[dict]]]]], image_size: int,
                         path: Path) -> Path:
    """Write receptive field per conv/pool layer (dots; line = largest so far), a panel per model group."""
    fig = new_figure(6 * len(panels), 4.2, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, models) in zip(axes, panels):
        for i, (label, rows) in enumerate(models):
            rf = [r["rf"] for r in rows]
            # Shortcut 1×1 convs see less than the layer before them: dots per layer, the line is the
            # largest receptive field reached so far. Shorter models are drawn on top (they share their
            # first layers with deeper ones) and each model has its own dash pattern.
            z = 3 + 100 / len(rf)
            line = ax.plot(range(1, len(rf) + 1), np.maximum.accumulate(rf), lw=1.8, ls=LINESTYLES[i % 4], zorder=z,
                           label=f"{label} (largest {max(rf)} px)")[0]
            ax.plot(range(1, len(rf) + 1), rf, "o", ms=4, color=line.get_color(), zorder=z)
        ax.axhline(image_size, color="k", ls="--", lw=1, label=f"image {image_size} px")
        ax.set_xlabel("conv / pool layer (execution order)")
        ax.set_ylabel("receptive field (px)")
        ax.set_title(title)
        ax.legend()
    return save(fig, path)


def _label_points(ax, xs, ys, labels) -> None:
    """Annotate points, moving a label to the next free slot around its point when it would overlap another."""
    ax.autoscale_view()  # final limits first: the overlap test works in pixels
    placed: list[tuple[float, float, float, float]] = []
    char_w, line_h = 4.3, 9.0  # pixels per character / line of a 7-pt label at 100 dpi
    offsets = [(4, 3), (4, -11), (4, 13), (4, -21), (4, 23), (-8, 3), (-8, -11)]
    order = sorted(range(len(xs)), key=lambda i: (xs[i], ys[i], labels[i]))
    for i in order:
        px, py = ax.transData.transform((xs[i], ys[i]))
        w = char_w * len(labels[i])
        for dx, dy in offsets:
            x0 = px + dx if dx > 0 else px + dx - w
            box = (x0, py + dy, x0 + w, py + dy + line_h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset pixels",
                    ha="left" if dx > 0 else "right", fontsize=7)


def _plain_number(v: float, _pos=None) -> str:
    """1500000 → "1.5M", 100000 → "100k", 0.1 → "0.1"."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def _minor_2_5(v: float, _pos=None) -> str:
    """Label the 2·10^k and 5·10^k minor ticks of a log axis in plain numbers, no others."""
    return _plain_number(v) if v > 0 and round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else ""


def _plain_log_axis(axis) -> None:
    """Log axis with plain numbers on major ticks and no minor labels (which overlap on short ranges)."""
    axis.set_major_formatter(FuncFormatter(_plain_number))
    axis.set_minor_formatter(NullFormatter())


def params_vs_accuracy(points: list[tuple[str, int, float, int]], path: Path) -> Path | None:
    """Write test accuracy vs parameter count (log x), one labelled point per experiment, colour by table."""
    if not points:
        return None
    fig = new_figure(9, 5.4, layout="constrained")
    ax = fig.subplots()
    ax.set_xscale("log")
    colors = matplotlib.colormaps["tab10"].colors
    for table in sorted({p[3] for p in points}):
        sel = [p for p in points if p[3] == table]
        ax.scatter([p[1] for p in sel], [p[2] for p in sel], color=colors[(table - 1) % 10], label=f"table {table}")
    _label_points(ax, [p[1] for p in points], [p[2] for p in points], [p[0] for p in points])
    _plain_log_axis(ax.xaxis)
    ax.set_xlabel("trainable parameters (log)")
    ax.set_ylabel("test accuracy (PyTorch)")
    ax.set_title("Parameters vs test accuracy")
    ax.legend()
    return save(fig, path)


def _real_log_ticks(axis, values) -> None:
    """Log axis with plain-number labels at real ticks: the usual 1-2-5 decades when the data spans a decade or
    more, else ticks at a few of the data's own values (a short range would otherwise show one tick or none)."""
    from matplotlib.ticker import FixedLocator

    vals = sorted(v for v in values if v and v > 0)
    _plain_log_axis(axis)
    if not vals:
        return
    if vals[-1] / vals[0] >= 10:
        from matplotlib.ticker import LogLocator

        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        return
    picks = sorted({float(f"{v:.2g}") for v in np.geomspace(vals[0], vals[-1], 4)})
    axis.set_major_locator(FixedLocator(picks))
    axis.set_minor_locator(FixedLocator([]))


def _point(ax, x, y, xerr, yerr, marker, color, unstable: bool, label=None) -> None:
    """One point with its interval bars; an UNSTABLE figure drawn hollow (face colour none)."""
    ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=marker, color=color, ecolor=color, elinewidth=0.8, capsize=2,
                mfc="none" if unstable else color, label=label, zorder=2)


def _err(value, ci):
    """Return matplotlib's [[below], [above]] of ``value``'s interval ``ci`` ([low, high]), None without one."""
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return [[max(0.0, value - ci[0])], [max(0.0, ci[1] - value)]]


def latency_vs_accuracy(points: dict[str, list[tuple]], path: Path) -> Path | None:
    """Write batch-1 p50 latency vs ORT accuracy, a panel per provider, marker per precision, labelled points.

    A point is (name, precision, p50 ms, accuracy) or (…, p50 interval, accuracy interval, unstable): intervals are
    drawn as bars, UNSTABLE latencies hollow; the log x axis carries real ticks however short its range."""
    providers = sorted(p for p in points if points[p])
    if not providers:
        return None
    fig = new_figure(10 * len(providers), 6.2, layout="constrained")
    axes = fig.subplots(1, len(providers), squeeze=False)[0]
    for ax, prov in zip(axes, providers):
        ax.set_xscale("log")
        pts_all = [tuple(p) + (None, None, None)[:max(0, 7 - len(p))] for p in points[prov]]
        by_exp: dict[str, list] = {}
        for name, prec, ms, acc, *_ in pts_all:
            by_exp.setdefault(name, []).append((list(PRECISION_STYLE).index(prec) if prec in PRECISION_STYLE else 9,
                                                ms, acc))
        for name in sorted(by_exp):  # a grey line joins one experiment's precisions, so int8 points stay attributable
            pts_ = sorted(by_exp[name])
            if len(pts_) > 1:
                ax.plot([q[1] for q in pts_], [q[2] for q in pts_], color="0.6", lw=0.8, zorder=1)
        hollow = False
        for prec, (marker, color) in PRECISION_STYLE.items():
            for i, (name, p, ms, acc, ms_ci, acc_ci, unstable) in enumerate(q for q in pts_all if q[1] == prec):
                hollow = hollow or bool(unstable)
                _point(ax, ms, acc, _err(ms, ms_ci), _err(acc, acc_ci), marker, color, bool(unstable),
                       prec if i == 0 else None)
        # One label per experiment (at its fp32 point when there is one): variants sit close to it.
        named = {}
        for name, prec, ms, acc, *_ in sorted(pts_all, key=lambda p: (p[0], p[1] != "fp32", p[1])):
            named.setdefault(name, (ms, acc))
        _label_points(ax, [v[0] for v in named.values()], [v[1] for v in named.values()], list(named))
        xs = [q[2] for q in pts_all] + [c for q in pts_all if q[4] for c in q[4]]
        _real_log_ticks(ax.xaxis, xs)
        ax.set_xlabel("ORT batch-1 p50 latency (ms, log; bars: 95 % interval)")
        ax.set_ylabel("ORT test accuracy (bars: 95 % interval)")
        ax.set_title(f"Latency vs accuracy — {prov} provider" + (" (hollow: UNSTABLE latency)" if hollow else ""))
        ax.legend(title="precision")
    return save(fig, path)


def throughput_vs_batch(rows: list[dict], title: str, path: Path) -> Path | None:
    """Write median throughput (batch ÷ p50) and p50 per call against batch size, a line per precision × provider ×
    backend, with interval bars (throughput: from the p50's 97.5 % interval; p50: 95 %) and UNSTABLE figures
    hollow; both axes log with ticks at the measured batch sizes. None without rows."""
    if not rows:
        return None
    fig = new_figure(11, 4.4, layout="constrained")
    ax_t, ax_p = fig.subplots(1, 2)
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.get("precision"), r.get("provider"), r.get("backend")), []).append(r)
    styles = iter(LINESTYLES * 8)
    hollow = False
    for (prec, prov, backend), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        rs = sorted(rs, key=lambda r: r["batch"])
        marker, color = PRECISION_STYLE.get(prec, ("D", "tab:gray"))
        ls, label = next(styles), f"{prec} {prov} {backend}"
        b = [r["batch"] for r in rs]
        thr = [r["batch"] * 1e3 / r["p50_ms"] for r in rs]
        ax_t.plot(b, thr, ls=ls, color=color, lw=1, zorder=1)
        ax_p.plot(b, [r["p50_ms"] for r in rs], ls=ls, color=color, lw=1, zorder=1)
        for i, r in enumerate(rs):
            unstable = bool(r.get("unstable"))
            hollow = hollow or unstable
            pair = r.get("p50_ci_pair_ms")
            t_ci = [r["batch"] * 1e3 / pair[1], r["batch"] * 1e3 / pair[0]] if pair and pair[0] > 0 else None
            _point(ax_t, r["batch"], thr[i], None, _err(thr[i], t_ci), marker, color, unstable,
                   label if i == 0 else None)
            _point(ax_p, r["batch"], r["p50_ms"], None, _err(r["p50_ms"], r.get("p50_ci_ms")), marker, color,
                   unstable)
    batches = sorted({r["batch"] for r in rows})
    from matplotlib.ticker import FixedLocator

    for ax, ylabel in ((ax_t, "images/s (batch ÷ p50)"), (ax_p, "p50 per call (ms)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator(batches))
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.xaxis.set_major_formatter(FuncFormatter(_plain_number))
        ax.set_xlim(batches[0] / 1.5, batches[-1] * 1.5)
        _real_log_ticks(ax.yaxis, [y for line in ax.get_lines() for y in line.get_ydata()])
        ax.set_xlabel("batch size (log)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.suptitle(title + (" — hollow: UNSTABLE figure" if hollow else ""), fontsize=10)
    return save(fig, path)
