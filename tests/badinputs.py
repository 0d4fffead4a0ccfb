"""Bad and odd image files for testing ``dermo.imageio.load_image`` (and the app).

Usage (also from other test suites, e.g. the Gradio API tests)::

    from tests.badinputs import make_bad_inputs, CASES, EXPECTED, LOADS_OK, REFUSED

    paths = make_bad_inputs(tmp_path)          # {name: Path}
    for name, path in paths.items():
        outcome = EXPECTED[name]                # "ok" or an ImageError.code
        ...

``make_bad_inputs(tmp_dir)`` writes every case below into ``tmp_dir`` and
returns ``{name: Path}``.  It is cheap (well under a second, a few hundred
KB of real disk: ``huge.jpg`` is a sparse file) and uses little memory (the
decompression bombs are streamed through zlib).  ``good_heic`` is only
present when ``pillow_heif`` can encode HEIC on this machine; ``missing``
is a path that is deliberately *not* created.

Expected outcomes with the default limits of ``load_image``
(max_bytes=25 MB, max_pixels=64 MP, max_side=4096):

=============  ==================  =================  =======================================
name           file                outcome            note
=============  ==================  =================  =======================================
zero_byte      zero_byte.jpg       empty              0 bytes
text           text.jpg            not_image          plain text named .jpg
truncated      truncated.jpg       truncated          noisy JPEG cut at 50 %
one_pixel      one_pixel.png       ok                 1x1; refused later by the quality gate
                                                      (``dermo.quality``, reason too_small)
bomb           bomb.png            too_many_pixels    valid 30000x30000 1-bit PNG, 110 KB
bomb_mid       bomb_mid.png        too_many_pixels    valid 9000x9000 PNG: 81 MP is under
                                                      Pillow's own bomb limits, so only our
                                                      max_pixels check refuses it
png16          png16.png           ok                 16-bit grey ramp, v*257 -> v
png16_rgb      png16_rgb.png       ok                 16-bit RGB
cmyk           cmyk.jpg            ok                 CMYK JPEG, pure red
rgba           rgba.png            ok                 left half transparent -> white
gray           gray.png            ok                 8-bit grey ramp
palette        palette.png         ok                 P mode with a transparent index
animated       animated.gif        ok                 2 frames red, green -> first (red)
exif_rotated   exif_rotated.jpg    ok                 64x32 stored, EXIF orientation 6 -> 32x64
bad_exif       bad_exif.jpg        ok                 EXIF block Pillow cannot parse: ignored
huge           huge.jpg            file_too_large     valid JPEG + zero padding to 26 MiB
good_heic      good.heic           ok                 HEIC (if pillow_heif can write it)
missing        missing.jpg         not_found          not created
=============  ==================  =================  =======================================

Each :class:`Case` also records, for the ``ok`` ones, the expected size
after loading and a probe pixel (x, y) -> RGB with a tolerance, so callers
can check the conversion and not only that it "loaded".  The content is
synthetic (flat colours, ramps): apart from ``one_pixel`` (too small) the
quality-gate outcome of these images is not specified.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CASES", "EXPECTED", "LOADS_OK", "REFUSED", "Case", "gif_comment_bomb", "jpeg_scan_bomb", "make_bad_inputs",
           "write_png"]


@dataclass(frozen=True)
class Case:
    filename: str
    outcome: str  # "ok" or the expected ImageError.code
    note: str
    size: tuple[int, int] | None = None  # (width, height) after load_image, for "ok"
    probe: tuple[tuple[int, int], tuple[int, int, int]] | None = None  # ((x, y), rgb)
    tol: int = 0  # allowed per-channel difference for ``probe`` (lossy formats)


CASES: dict[str, Case] = {
    "zero_byte": Case("zero_byte.jpg", "empty", "0 bytes"),
    "text": Case("text.jpg", "not_image", "plain text named .jpg"),
    "truncated": Case("truncated.jpg", "truncated", "noisy JPEG cut at 50 %"),
    "one_pixel": Case("one_pixel.png", "ok", "1x1; the quality gate refuses it (too_small)",
                      (1, 1), ((0, 0), (200, 100, 50))),
    "bomb": Case("bomb.png", "too_many_pixels", "30000x30000 PNG"),
    "bomb_mid": Case("bomb_mid.png", "too_many_pixels", "9000x9000 PNG, below Pillow's own limit"),
    "png16": Case("png16.png", "ok", "16-bit grey ramp v*257", (256, 16), ((200, 3), (200, 200, 200))),
    "png16_rgb": Case("png16_rgb.png", "ok", "16-bit RGB", (64, 48), ((10, 10), (255, 128, 0))),
    "cmyk": Case("cmyk.jpg", "ok", "CMYK JPEG, red", (64, 48), ((32, 24), (255, 0, 0)), 16),
    "rgba": Case("rgba.png", "ok", "left half transparent -> white, right half opaque blue",
                 (64, 48), ((5, 5), (255, 255, 255))),
    "gray": Case("gray.png", "ok", "8-bit grey ramp", (256, 16), ((77, 8), (77, 77, 77))),
    "palette": Case("palette.png", "ok", "P with transparent index -> white", (64, 48), ((5, 5), (255, 255, 255))),
    "animated": Case("animated.gif", "ok", "2 frames: red then green -> red", (64, 48), ((30, 20), (255, 0, 0))),
    "exif_rotated": Case("exif_rotated.jpg", "ok", "64x32 stored, orientation 6 -> 32x64, red on top",
                         (32, 64), ((16, 5), (255, 0, 0)), 16),
    "bad_exif": Case("bad_exif.jpg", "ok", "a damaged EXIF block (not TIFF): ignored, the photo kept", (64, 48),
                     ((32, 24), (180, 120, 100)), 16),
    "huge": Case("huge.jpg", "file_too_large", "valid JPEG padded with zeros to 26 MiB (sparse)"),
    "good_heic": Case("good.heic", "ok", "HEIC (only when pillow_heif can encode)", (64, 48),
                      ((32, 24), (30, 120, 200)), 16),
    "missing": Case("missing.jpg", "not_found", "path not created"),
}

EXPECTED: dict[str, str] = {name: c.outcome for name, c in CASES.items()}
LOADS_OK: frozenset[str] = frozenset(n for n, o in EXPECTED.items() if o == "ok")
REFUSED: frozenset[str] = frozenset(n for n, o in EXPECTED.items() if o != "ok")


# --------------------------------------------------------------------------- #
# a tiny streaming PNG writer (for bombs and 16-bit RGB)
# --------------------------------------------------------------------------- #

def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png(path: Path, width: int, height: int, *, bit_depth: int, color_type: int, rows=None) -> None:
    """Write a valid PNG, streaming the IDAT through zlib.

    ``rows`` is an iterable of raw scanlines (without the filter byte); when
    omitted every pixel is 0, which is how the bombs are made: memory is one
    block of rows, time ~0.3 s for 30000x30000 at 1 bit.
    """
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row_bytes = (width * channels * bit_depth + 7) // 8
    comp = zlib.compressobj(9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)))
        if rows is None:
            block_rows = max(1, min(height, (4 << 20) // (row_bytes + 1)))
            block = bytes((row_bytes + 1) * block_rows)
            left = height
            while left:
                n = min(left, block_rows)
                out = comp.compress(block if n == block_rows else bytes((row_bytes + 1) * n))
                if out:
                    f.write(_chunk(b"IDAT", out))
                left -= n
        else:
            for row in rows:
                assert len(row) == row_bytes
                out = comp.compress(b"\x00" + row)
                if out:
                    f.write(_chunk(b"IDAT", out))
        f.write(_chunk(b"IDAT", comp.flush()))
        f.write(_chunk(b"IEND", b""))


# --------------------------------------------------------------------------- #
# writers
# --------------------------------------------------------------------------- #

def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def make_bad_inputs(tmp_dir: str | Path) -> dict[str, Path]:
    """Write the :data:`CASES` into ``tmp_dir``; return ``{name: path}``."""
    d = Path(tmp_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = {name: d / c.filename for name, c in CASES.items()}
    rng = np.random.default_rng(0)

    p["zero_byte"].write_bytes(b"")
    p["text"].write_text("This is not a photo, just some text saved with a .jpg name.\n" * 20)

    noisy = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), "RGB")
    data = _jpeg_bytes(noisy, quality=90)
    p["truncated"].write_bytes(data[: len(data) // 2])

    Image.new("RGB", (1, 1), (200, 100, 50)).save(p["one_pixel"])

    write_png(p["bomb"], 30000, 30000, bit_depth=1, color_type=0)
    write_png(p["bomb_mid"], 9000, 9000, bit_depth=1, color_type=0)

    ramp16 = np.tile((np.arange(256, dtype=np.uint16) * 257)[None, :], (16, 1))
    Image.fromarray(ramp16).save(p["png16"])  # mode I;16 -> 16-bit grey PNG

    px = struct.pack(">HHH", 65535, 128 * 257, 0)
    write_png(p["png16_rgb"], 64, 48, bit_depth=16, color_type=2, rows=(px * 64 for _ in range(48)))

    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(p["cmyk"], quality=95)

    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[:, 32:] = (0, 0, 255, 255)
    Image.fromarray(rgba, "RGBA").save(p["rgba"])

    ramp8 = np.tile(np.arange(256, dtype=np.uint8)[None, :], (16, 1))
    Image.fromarray(ramp8, "L").save(p["gray"])

    pal = Image.new("P", (64, 48), 2)
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 0])
    pal.paste(0, (32, 0, 64, 48))
    pal.save(p["palette"], transparency=2)

    frames = [Image.new("RGB", (64, 48), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(p["animated"], save_all=True, append_images=frames[1:], duration=100, loop=0)

    rot = Image.new("RGB", (64, 32), (255, 0, 0))
    rot.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    rot.save(p["exif_rotated"], quality=95, exif=exif)

    # an APP1 "Exif" segment whose TIFF header is damaged: Image.getexif() raises SyntaxError on it
    Image.new("RGB", (64, 48), (180, 120, 100)).save(p["bad_exif"], quality=95,
                                                     exif=b"Exif\x00\x00MM\x00\x07\x00\x00\x00\x08")

    with open(p["huge"], "wb") as f:
        f.write(_jpeg_bytes(Image.new("RGB", (64, 48), (180, 120, 100))))
        f.truncate(26 * 2**20)  # sparse zero padding after the JPEG's EOI marker

    try:
        import pillow_heif

        heif = pillow_heif.from_pillow(Image.new("RGB", (64, 48), (30, 120, 200)))
        heif.save(p["good_heic"], quality=90)
    except Exception:  # no encoder here: drop the case
        p.pop("good_heic", None)
        if Path(d / CASES["good_heic"].filename).exists():
            (d / CASES["good_heic"].filename).unlink()

    if p["missing"].exists():
        p["missing"].unlink()
    return p


# --------------------------------------------------------------------------- #
# small files that are expensive to parse or decode (not in CASES: their outcome is "corrupt")
# --------------------------------------------------------------------------- #

def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, segment bytes) of a JPEG up to EOI; a SOS segment includes its entropy-coded data."""
    out, i = [], 2
    while data[i + 1] != 0xD9:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        j = i + 2 + length
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or an RSTn
            while not (data[j] == 0xFF and data[j + 1] != 0x00 and not 0xD0 <= data[j + 1] <= 0xD7):
                j += 1
        out.append((marker, data[i:j]))
        i = j
    return out


def jpeg_scan_bomb(width: int = 8000, height: int = 8000, scans: int = 2000) -> bytes:
    """A progressive JPEG whose header says ``width`` x ``height`` and which has ``scans`` scans, all but the first
    without data: a few tens of KB that libjpeg decodes in about ``scans`` x 4 ms at 64 megapixels (one pass over the
    image per scan)."""
    segs = _segments(_jpeg_bytes(Image.new("RGB", (16, 16), (100, 50, 30)), quality=90, progressive=True))
    sos = [seg for marker, seg in segs if marker == 0xDA]
    out = bytearray(b"\xff\xd8")
    for marker, seg in segs:
        if marker == 0xC2:  # SOF2: the declared size
            seg = seg[:5] + struct.pack(">HH", height, width) + seg[9:]
        if marker != 0xDA:
            out += seg
    out += sos[0]
    for k in range(scans - 1):  # the other scans' headers, again and again, with no entropy-coded data
        seg = sos[1 + k % (len(sos) - 1)]
        out += seg[:2 + struct.unpack(">H", seg[2:4])[0]]
    return bytes(out + b"\xff\xd9")


def gif_comment_bomb(blocks: int = 200_000) -> bytes:
    """A valid 64x48 GIF whose one comment, before the image, is ``blocks`` one-byte sub-blocks: Pillow joins them in
    quadratic time (0.4 MB: about half a second; 5 MB: over a minute)."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (180, 120, 100)).save(buf, "GIF")
    g = buf.getvalue()
    start = 13 + (3 << ((g[10] & 7) + 1) if g[10] & 0x80 else 0)  # after the header and global colour table
    return g[:start] + b"\x21\xfe" + b"\x01c" * blocks + b"\x00" + g[start:]
