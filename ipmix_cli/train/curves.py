"""Loss and accuracy curves of a run as a PNG, drawn with PIL (no plotting library needed)."""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw, ImageFont

from fractalgen.files import atomic_write_bytes

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def draw_panel(draw, box, title, series, xlabel, font, legend_at_top=True):
    """series: list of (label, [(x, y), ...]); draws axes, ticks, lines and a legend in box
    (top right for falling curves, bottom right for rising ones)."""
    x0, y0, x1, y1 = box
    left, right, top, bottom = x0 + 52, x1 - 12, y0 + 26, y1 - 34
    draw.text((x0 + 52, y0 + 6), title, fill=(0, 0, 0), font=font)
    points = [p for _, pts in series for p in pts if all(math.isfinite(v) for v in p)]
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    draw.text(((left + right) // 2 - 3 * len(xlabel), bottom + 18), xlabel, fill=(0, 0, 0), font=font)
    if not points:
        draw.text((left + 10, top + 10), "no data yet", fill=(120, 120, 120), font=font)
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys), max(ys)
    if xhi == xlo:
        xlo, xhi = xlo - 1, xhi + 1
    if yhi == ylo:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    pad = 0.05 * (yhi - ylo)
    ylo, yhi = ylo - pad, yhi + pad

    def px(x, y):
        return (left + (x - xlo) / (xhi - xlo) * (right - left), bottom - (y - ylo) / (yhi - ylo) * (bottom - top))

    for t in _nice_ticks(ylo, yhi):
        _, yy = px(xlo, t)
        draw.line((left, yy, right, yy), fill=(230, 230, 230))
        draw.text((x0 + 4, yy - 6), _fmt(t), fill=(0, 0, 0), font=font)
    for t in _nice_ticks(xlo, xhi):
        xx, _ = px(t, ylo)
        draw.line((xx, bottom, xx, bottom + 4), fill=(0, 0, 0))
        draw.text((xx - 8, bottom + 5), _fmt(t), fill=(0, 0, 0), font=font)
    legend_x = right - 34 - max(draw.textlength(label, font=font) for label, _ in series)
    for k, (label, pts) in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        pts = [px(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for p in pts if len(pts) <= 60 else []:
            draw.ellipse((p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2), fill=colour)
        ly = top + 6 + 14 * k if legend_at_top else bottom - 8 - 14 * (len(series) - k)
        draw.line((legend_x, ly + 6, legend_x + 18, ly + 6), fill=colour, width=3)
        draw.text((legend_x + 22, ly), label, fill=(0, 0, 0), font=font)


def render_curves(loss_series, accuracy_series, title: str = "") -> Image.Image:
    """Two panels: loss against step, accuracy against epoch. Each series: list of (label, pts)."""
    font = ImageFont.load_default()
    img = Image.new("RGB", (960, 380), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((12, 4), title, fill=(0, 0, 0), font=font)
    draw_panel(draw, (0, 16, 480, 380), "loss", loss_series, "step", font)
    draw_panel(draw, (480, 16, 960, 380), "accuracy", accuracy_series, "epoch", font, legend_at_top=False)
    return img


def write_curves_png(path, records: list[dict], title: str = "") -> None:
    """Draw the curves from the run's JSON-lines records and write the PNG atomically."""
    steps = [r for r in records if r.get("type") == "step"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    loss = [("train loss", [(r["step"], r["loss"]) for r in steps])]
    if any("test_loss" in r for r in epochs):
        loss.append(("test loss (epoch end)", [(r["step"], r["test_loss"]) for r in epochs if "test_loss" in r]))
    acc = [("train acc", [(r["epoch"] + 1, r["train_acc"]) for r in epochs])]
    if any("test_acc" in r for r in epochs):
        acc.append(("test acc", [(r["epoch"] + 1, r["test_acc"]) for r in epochs if "test_acc" in r]))
    buf = io.BytesIO()
    render_curves(loss, acc, title).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
