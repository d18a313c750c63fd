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


def write_duplicates(out: Path, dups: list[list[str]]) -> list[list[str]]:
    """`duplicates.csv`: each group of identical files (`Embedded.identical_files`), by the images' ids."""
    with open(out / "duplicates.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["group", "image"])
        for k, g in enumerate(dups):
            for i in g:
                w.writerow([k, i])
    return dups


def write_near_duplicates(out: Path, ids: list[str], near: list) -> None:
    """Blind pairs set aside as copies (resized, re-encoded: thumbnails at most `near_duplicate_max_diff` apart)."""
    with open(out / "near_duplicates.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "largest_cell_difference"])
        for a, b, diff in near:
            w.writerow([ids[a], ids[b], diff])


def _thumb(ref: ImageRef, path: Path) -> None:
    if not path.exists():
        img = ref.open()
        img.thumbnail((THUMB, THUMB))
        img.save(path, quality=90)


REVIEW_COLUMNS = ("image_a", "image_b", "question", "options", "answer_a", "answer_b")

# The review page's logic, with no page in it (tests/test_mining.py runs it under node): the reviewed pairs as CSV.
REVIEW_SCRIPT = r"""
const mof = {
  cell(s) { s = String(s); return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; },
  // rows: [{a, b, keep, q, oa, ob, ans_a, ans_b}] -> [csv text, number left out because unfinished]
  csv(rows) {
    const out = [%(columns)s.join(",")];
    let unfinished = 0;
    for (const r of rows) {
      if (!r.keep) continue;
      const q = r.q.trim(), oa = r.oa.trim(), ob = r.ob.trim();
      if (!q || !oa || !ob) { unfinished++; continue; }
      out.push([r.a, r.b, q, `(a) ${oa} (b) ${ob}`, `(${r.ans_a})`, `(${r.ans_b})`].map(mof.cell).join(","));
    }
    return [out.join("\n") + "\n", unfinished];
  },
};
if (typeof document !== "undefined") {
  const KEY = "mof-review:" + location.pathname;
  const fields = ["keep", "q", "oa", "ob", "ans_a", "ans_b"];
  const rowsOf = () => [...document.querySelectorAll("tr.p")].map(tr => {
    const r = {a: tr.dataset.a, b: tr.dataset.b, tr};
    for (const f of fields) { const el = tr.querySelector("." + f); r[f] = el.type === "checkbox" ? el.checked : el.value; }
    return r;
  });
  const save = () => localStorage.setItem(KEY, JSON.stringify(rowsOf().map(({tr, ...r}) => r)));
  const saved = JSON.parse(localStorage.getItem(KEY) || "[]");
  for (const tr of document.querySelectorAll("tr.p")) {   // a reload keeps what was typed
    const old = saved.find(r => r.a === tr.dataset.a && r.b === tr.dataset.b);
    for (const f of fields) {
      const el = tr.querySelector("." + f);
      if (old) { if (el.type === "checkbox") el.checked = old[f]; else el.value = old[f]; }
      el.addEventListener("input", save); el.addEventListener("change", save);
    }
  }
  window.exportReviewed = () => {
    const [text, unfinished] = mof.csv(rowsOf());
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], {type: "text/csv"}));
    link.download = "reviewed_pairs.csv";
    link.click();
    document.getElementById("status").textContent =
      `exported ${text.trim().split("\n").length - 1} pairs` + (unfinished ? `; ${unfinished} kept but unfinished left out` : "");
  };
}
""" % {"columns": repr(list(REVIEW_COLUMNS)).replace("'", '"')}


def write_review(out: Path, refs: dict[str, ImageRef], ids, pairs, clip, dino, max_pairs: int, per_page: int,
                 found: int | None = None) -> int:
    """`review.html` over the first `max_pairs` pairs, `per_page` a page, thumbnails in `review_images/`: keep or
    drop each pair, write its question, options and each image's answer, and export `reviewed_pairs.csv`, which
    `python -m mof.mining.benchmark RUN` turns into a benchmark in MMVP's layout. Static: it opens from the file
    system, and what is typed is kept in the browser's local storage across reloads."""
    thumbs = out / "review_images"
    thumbs.mkdir(exist_ok=True)
    rows = []
    edit = ('<td><label><input type="checkbox" class="keep" checked> keep</label><br>'
            '<input class="q" placeholder="question" size="34"><br>'
            '(a) <input class="oa" size="12"> (b) <input class="ob" size="12"><br>'
            'image a: <select class="ans_a"><option>a</option><option>b</option></select> '
            'image b: <select class="ans_b"><option>b</option><option>a</option></select></td>')
    for n, ((a, b), c, d) in enumerate(zip(pairs[:max_pairs].tolist(), clip.tolist(), dino.tolist())):
        cells = []
        for side, i in (("a", a), ("b", b)):
            name = f"{n:05d}{side}.jpg"
            _thumb(refs[ids[i]], thumbs / name)
            cells.append(f'<td><img src="review_images/{name}" title="{html.escape(ids[i])}"><br>'
                         f'<small>{html.escape(ids[i])}</small></td>')
        rows.append(f'<tr class="p" data-page="{n // per_page}" data-a="{html.escape(ids[a])}" '
                    f'data-b="{html.escape(ids[b])}"><td>{n + 1}</td>{"".join(cells)}'
                    f"<td>CLIP {c:.4f}<br>DINOv2 {d:.4f}<br>gap {c - d:.4f}</td>{edit}</tr>")
    pages = max(1, (len(rows) + per_page - 1) // per_page)
    (out / "review.html").write_text(f"""<!doctype html><meta charset="utf-8"><title>CLIP-blind pairs</title>
<style>body{{font-family:sans-serif}} td{{padding:4px;vertical-align:top}} img{{max-width:{THUMB}px}}</style>
<h1>CLIP-blind pairs ({len(pairs) if found is None else found} found, {len(rows)} shown)</h1>
<p>Keep the pairs that differ in one visual property, write a question each image answers differently, then
<button onclick="exportReviewed()">export reviewed_pairs.csv</button> <span id="status"></span>
and run <code>python -m mof.mining.benchmark {html.escape(str(out))}</code> to make the benchmark.</p>
<p><button onclick="go(-1)">previous</button> page <span id="n">1</span> / {pages} <button onclick="go(1)">next</button></p>
<table><tr><th>#</th><th>image a</th><th>image b</th><th>cosines</th><th>your question</th></tr>{"".join(rows)}</table>
<script>{REVIEW_SCRIPT}
let page=0;function go(s){{page=Math.min(Math.max(page+s,0),{pages - 1});document.getElementById("n").textContent=page+1;
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
