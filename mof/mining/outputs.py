"""What a mining run leaves in its folder: `pairs.csv`, `duplicates.csv`, `summary.json`, `review.html` (paged, with
thumbnails beside it, opens from the file system), `contact_sheet.png`, and `benchmark/` in MMVP's layout with
the questions left to write."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

from PIL import Image, ImageDraw

from ..evaluation.benchmarks.mmvp import write_mmvp
from .sources import ImageRef

THUMB = 160


def write_pairs(out: Path, ids: list[str], pairs, clip, dino) -> None:
    with open(out / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "clip_cosine", "dino_cosine"])
        for (a, b), c, d in zip(pairs.tolist(), clip.tolist(), dino.tolist()):
            w.writerow([ids[a], ids[b], f"{c:.6f}", f"{d:.6f}"])


def write_duplicates(out: Path, ids: list[str], hashes: list[str]) -> list[list[str]]:
    groups = {}
    for i, h in zip(ids, hashes):
        groups.setdefault(h, []).append(i)
    dups = [g for g in groups.values() if len(g) > 1]
    with open(out / "duplicates.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["group", "image"])
        for k, g in enumerate(dups):
            for i in g:
                w.writerow([k, i])
    return dups


def write_near_duplicates(out: Path, ids: list[str], near: list) -> None:
    """CLIP-near pairs set aside as copies (perceptual hashes `bits` apart), never blind pairs."""
    with open(out / "near_duplicates.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "hash_bits_apart"])
        for a, b, bits in near:
            w.writerow([ids[a], ids[b], bits])


def _thumb(ref: ImageRef, path: Path) -> None:
    if not path.exists():
        img = ref.open()
        img.thumbnail((THUMB, THUMB))
        img.save(path, quality=90)


def write_review(out: Path, refs: dict[str, ImageRef], ids, pairs, clip, dino, max_pairs: int, per_page: int,
                 found: int | None = None) -> int:
    """`review.html` over the first `max_pairs` pairs, `per_page` a page, thumbnails in `review_images/`."""
    thumbs = out / "review_images"
    thumbs.mkdir(exist_ok=True)
    rows = []
    for n, ((a, b), c, d) in enumerate(zip(pairs[:max_pairs].tolist(), clip.tolist(), dino.tolist())):
        cells = []
        for side, i in (("a", a), ("b", b)):
            name = f"{n:05d}{side}.jpg"
            _thumb(refs[ids[i]], thumbs / name)
            cells.append(f'<td><img src="review_images/{name}" title="{html.escape(ids[i])}"><br>'
                         f'<small>{html.escape(ids[i])}</small></td>')
        rows.append(f'<tr class="p" data-page="{n // per_page}"><td>{n + 1}</td>{"".join(cells)}'
                    f"<td>CLIP {c:.4f}<br>DINOv2 {d:.4f}<br>gap {c - d:.4f}</td></tr>")
    pages = max(1, (len(rows) + per_page - 1) // per_page)
    (out / "review.html").write_text(f"""<!doctype html><meta charset="utf-8"><title>CLIP-blind pairs</title>
<style>body{{font-family:sans-serif}} td{{padding:4px;vertical-align:top}} img{{max-width:{THUMB}px}}</style>
<h1>CLIP-blind pairs ({len(pairs) if found is None else found} found, {len(rows)} shown)</h1>
<p><button onclick="go(-1)">previous</button> page <span id="n">1</span> / {pages} <button onclick="go(1)">next</button></p>
<table><tr><th>#</th><th>image a</th><th>image b</th><th>cosines</th></tr>{"".join(rows)}</table>
<script>let page=0;function go(s){{page=Math.min(Math.max(page+s,0),{pages - 1});document.getElementById("n").textContent=page+1;
for(const r of document.querySelectorAll("tr.p"))r.style.display=(+r.dataset.page===page)?"":"none";}}go(0);</script>
""", encoding="utf-8")
    return len(rows)


def write_contact_sheet(out: Path, refs: dict[str, ImageRef], ids, pairs, clip, dino, n: int, columns: int = 4) -> Path:
    """The top `n` pairs on a grid, `columns` pairs a row: image a, image b, and both cosines under them."""
    top = pairs[:n].tolist()
    cell_w, cell_h = 2 * THUMB + 15, THUMB + 40
    cols = max(1, min(columns, len(top)))
    rows = max(1, (len(top) + cols - 1) // cols)
    sheet = Image.new("RGB", (cols * cell_w + 5, rows * cell_h + 5), "white")
    draw = ImageDraw.Draw(sheet)
    for k, ((a, b), c, d) in enumerate(zip(top, clip.tolist(), dino.tolist())):
        x, y = 5 + (k % cols) * cell_w, 5 + (k // cols) * cell_h
        for col, i in enumerate((a, b)):
            img = refs[ids[i]].open()
            img.thumbnail((THUMB, THUMB))
            sheet.paste(img, (x + col * (THUMB + 5), y))
        draw.text((x, y + THUMB + 4), f"#{k + 1}  CLIP {c:.3f}  DINO {d:.3f}  gap {c - d:.3f}", fill="black")
    sheet.save(out / "contact_sheet.png")
    return out / "contact_sheet.png"


def write_benchmark_skeleton(out: Path, refs: dict[str, ImageRef], ids, pairs, n: int) -> dict:
    """MMVP's layout for the top `n` pairs: Index (2k-1, 2k) per pair, Question/Options/Correct Answer left empty."""
    rows, images = [], []
    for a, b in pairs[:n].tolist():
        for i in (a, b):
            rows.append({"Question": "", "Options": "", "Correct Answer": ""})
            images.append(refs[ids[i]].open())
    return write_mmvp(out / "benchmark", rows, images)


def write_summary(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
