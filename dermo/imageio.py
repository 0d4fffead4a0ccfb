"""Robust image loading for DermoHelper.

``load_image`` turns whatever the user (or the UI layer) hands us into a
fully decoded, EXIF-oriented, 8-bit **RGB** ``PIL.Image.Image``, or raises
:class:`ImageError` whose message is safe to show to the user: it says what
went wrong and what to do about it.  ``ImageError.code`` is a short
machine-readable reason (see :data:`ERROR_CODES`) for tests and API clients.

Accepted sources
    * a path (``str`` / ``os.PathLike``),
    * ``bytes`` / ``bytearray`` / ``memoryview`` holding an encoded file,
    * a binary file object (anything with ``.read()`` returning bytes),
    * a ``numpy.ndarray`` of shape HxW, HxWx1, HxWx3 or HxWx4, dtype uint8,
      uint16 (full 0..65535 range, scaled by 1/257) or bool,
    * a ``PIL.Image.Image`` (any mode; animated images give frame 0 -- note
      that this seeks the caller's image to frame 0).
  ``None`` (nothing uploaded) raises ``ImageError(code="no_image")``; any
  other type raises ``TypeError`` (a programming error, not a user error).

Guarantees and policies
    * **Encoded size** is checked before the data is read: ``os.stat`` for a
      path, ``len`` for bytes, seek/tell for seekable file objects, and a
      bounded read (``max_bytes + 1``) for other streams.
    * **Pixel count** (decompression bombs): width*height is read from the
      file header by ``Image.open`` (which decodes no pixel data) and the
      image is refused if it exceeds ``max_pixels`` *before* ``.load()``.
      This does not depend on, and does not modify, ``PIL.Image.MAX_IMAGE_PIXELS``;
      Pillow's own (larger, by default 2 x 89.5 MP) hard limit may still fire
      first at open time and is reported the same way (code
      ``too_many_pixels``).
    * **Formats** are restricted to :data:`ALLOWED_FORMATS` (JPEG/MPO, PNG,
      WebP, GIF, BMP, TIFF, HEIF/HEIC, AVIF), so Pillow never hands a user
      upload to e.g. the EPS plugin (which runs Ghostscript).
    * **Truncated / corrupt files** fail here (``.load()`` is called inside
      ``load_image``).  We rely on ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``
      being ``False`` (Pillow's default) and never change it; if some other
      code set it to ``True`` a warning is logged because truncated JPEGs
      would then silently decode as half-grey images.
    * **HEIC/HEIF** is read through ``pillow_heif``; its Pillow opener is
      registered once, lazily, on the first call of ``load_image``.
    * **Orientation**: the EXIF orientation tag is applied
      (``ImageOps.exif_transpose``), so the result is upright as the user saw it.
    * **Colour modes** are converted to RGB:

      - ``L`` / ``1`` / ``CMYK`` / ``YCbCr`` ... -> Pillow's ``convert("RGB")``
        (CMYK uses Pillow's naive conversion, embedded ICC profiles are not
        applied);
      - 16-bit grey (``I;16*``) and 32-bit integer ``I`` are taken to span
        0..65535 and scaled by 1/257 (Pillow's own ``convert`` would clip
        everything above 255 to white);
      - float ``F``: values in 0..1 are scaled by 255, otherwise clipped to 0..255;
      - anything with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a
        transparent palette index, ...) is **composited on a white
        background** (:data:`BACKGROUND`) - what a user sees in a browser.
    * **Size bound for later steps**: if the longest side exceeds ``max_side``
      (default :data:`MAX_SIDE` = 4096) the image is downscaled, aspect ratio
      kept (``Image.thumbnail``, Lanczos).  For JPEGs, libjpeg's DCT scaling
      (``Image.draft``) is used first so big photos never get decoded at full
      size.  Pass ``max_side=None`` to keep the native resolution.

The library never prints; it logs through ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "ALLOWED_FORMATS",
    "BACKGROUND",
    "ERROR_CODES",
    "MAX_BYTES",
    "MAX_GIF_COMMENT_BLOCKS",
    "MAX_JPEG_SCANS",
    "MAX_PIXELS",
    "MAX_SIDE",
    "ORIGINAL_SIZE",
    "RECORDED_FOR",
    "ImageError",
    "ImageSource",
    "check_image_file",
    "load_image",
]

logger = logging.getLogger(__name__)

#: Default limit on the encoded file size (25 MB, decimal: the unit phones and file browsers show).
MAX_BYTES = 25_000_000
#: Default limit on width*height read from the header (64 megapixels: 48 MP phone photos pass, bombs do not).
MAX_PIXELS = 64_000_000
#: Longest side after loading; larger images are downscaled (see module doc).
MAX_SIDE = 4096
#: ``Image.info`` key of the (upright) size of the file when :func:`load_image` handed back a smaller image.
ORIGINAL_SIZE = "dermo_original_size"
#: ``Image.info`` key of the size of the image that record was written for: Pillow copies ``info`` into a crop or a
#: resize, where the record no longer describes the pixels (a 100 x 100 crop of a downscaled 48 MP photo is not a
#: 48 MP photo), so a record is only read where this still equals the image's size.
RECORDED_FOR = "dermo_original_size_of"
#: Background used to flatten transparent images.
BACKGROUND = (255, 255, 255)
#: Most scans (SOS markers) a JPEG may have. Encoders write 1 (baseline) or about 6-20 (progressive); each scan of a
#: progressive JPEG is a pass over the whole image, so a small file of thousands of empty scans decodes for minutes.
MAX_JPEG_SCANS = 100
#: Most comment sub-blocks a GIF may have before its first image (a comment takes one or a few): Pillow joins them
#: in time quadratic in their number, so a GIF of a few MB of one-byte comment blocks took minutes to open.
MAX_GIF_COMMENT_BLOCKS = 4096
#: Formats Pillow may use to decode user data (others are refused).
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")

#: What to tell the user to do after most refusals.
_UPLOAD_HINT = "Upload a JPEG, PNG, WebP or HEIC photo."

#: ``ImageError.code`` values and their meaning.
ERROR_CODES = {
    "no_image": "nothing was provided",
    "not_found": "the path does not exist",
    "not_a_file": "the path is a folder or a special file",
    "unreadable": "the file could not be read (permissions, I/O error)",
    "empty": "0 bytes",
    "file_too_large": "encoded size above max_bytes",
    "not_image": "not a recognised image format",
    "heic_unsupported": "HEIC/HEIF file but no HEIF decoder is available",
    "truncated": "the file ends before the image data does",
    "corrupt": "the image data could not be decoded",
    "too_many_pixels": "width*height above max_pixels (or Pillow's bomb limit)",
    "unsupported_mode": "colour mode that cannot be converted to RGB",
    "unsupported_array": "numpy array with an unsupported shape or dtype",
}

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, np.ndarray, Image.Image]


class ImageError(ValueError):
    """A user-facing problem with an uploaded image.

    ``str(err)`` is a complete sentence for the end user; ``err.code`` is one
    of :data:`ERROR_CODES`.
    """

    def __init__(self, message: str, *, code: str = "corrupt") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __reduce__(self):  # keep ``code`` when pickled (e.g. across processes)
        return (_rebuild_image_error, (self.message, self.code))


def _rebuild_image_error(message: str, code: str) -> ImageError:
    return ImageError(message, code=code)


# --------------------------------------------------------------------------- #
# HEIF registration (lazy, once) and allowed-format list
# --------------------------------------------------------------------------- #

_init_lock = threading.Lock()
_initialised = False
_heif_available = False
_formats: tuple[str, ...] = ()


def _ensure_init() -> None:
    global _initialised, _heif_available, _formats
    if _initialised:
        return
    with _init_lock:
        if _initialised:
            return
        try:
            import pillow_heif  # noqa: PLC0415 - optional, imported lazily

            pillow_heif.register_heif_opener()
            _heif_available = True
        except Exception as exc:  # ImportError, or a broken libheif build
            logger.warning("HEIC/HEIF support unavailable: %s", exc)
            _heif_available = False
        Image.init()
        # Image.open raises KeyError for unregistered names, so filter.
        _formats = tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)
        _initialised = True


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #

def _mb(n: float) -> str:
    """A size as phones and file browsers show it (decimal units: 1 MB = 1,000,000 bytes)."""
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.0f} KB"
    return f"{int(n)} bytes"


def _mp(n: float) -> str:
    return f"{n / 1e6:.0f} megapixels" if n >= 1e6 else f"{n / 1e6:.2f} megapixels"


def _too_big_file(size: int | None, max_bytes: int) -> ImageError:
    what = f"The file is too large ({_mb(size)})" if size is not None else "The file is too large"
    return ImageError(
        f"{what}; the limit is {_mb(max_bytes)}. "
        "Upload a smaller photo (for example a JPEG exported at a lower resolution).",
        code="file_too_large",
    )


def _empty() -> ImageError:
    return ImageError(f"The file is empty (0 bytes). {_UPLOAD_HINT}", code="empty")


def _too_many_pixels(width: int | None, height: int | None, pixels: int | None, max_pixels: int) -> ImageError:
    if width and height:
        dims = f"{width} x {height} pixels, {_mp(width * height)}"
    elif pixels:
        dims = _mp(pixels)
    else:
        dims = "unknown size"
    return ImageError(
        f"The image is too large ({dims}); the limit is {_mp(max_pixels)}. "
        "Resize it (for example to 4000 pixels on the longest side) and upload it again.",
        code="too_many_pixels",
    )


_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"avif", b"avis"}


def _looks_like_heif(head: bytes) -> bool:
    return len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # only a multibyte char cut at the end of the prefix is fine
        if exc.reason != "unexpected end of data":  # (not a stray byte near the end: b"\xff\xd8\xff" is a JPEG)
            return False
    # control characters other than tab / newlines / form feed / escape: binary (e.g. a GIF cut after its header)
    return not re.search(rb"[\x01-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]", head)


def _not_image(head: bytes) -> ImageError:
    if _looks_like_heif(head) and not _heif_available:
        return ImageError(
            "This looks like a HEIC/HEIF photo, which this server cannot read. "
            "Convert it to JPEG (on an iPhone: Settings > Camera > Formats > Most Compatible) and upload it again.",
            code="heic_unsupported",
        )
    if b"<svg" in head[:512].lower():  # a drawing, offered by phones' image pickers, is text to us
        return ImageError(
            "This is an SVG drawing, not a photo: DermoHelper reads only photos. " + _UPLOAD_HINT,
            code="not_image",
        )
    if _looks_like_text(head[:512]):
        return ImageError(
            "The file is not an image: it contains text (perhaps a renamed document or a web page). "
            + _UPLOAD_HINT,
            code="not_image",
        )
    return ImageError(
        "The file is not an image we can read (unknown or unsupported format, or a damaged file). "
        + _UPLOAD_HINT,
        code="not_image",
    )


def _read_bounded(fp: Any, max_bytes: int) -> bytes:
    """Read at most ``max_bytes + 1`` bytes from ``fp`` (to detect overflow)."""
    chunks: list[bytes] = []
    total = 0
    while total <= max_bytes:
        chunk = fp.read(min(1 << 20, max_bytes + 1 - total))
        if chunk is None:  # non-blocking raw stream with no data ready
            raise ImageError("The upload could not be read completely. Try again.", code="unreadable")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError("load_image needs a file opened in binary mode ('rb')")
        if not chunk:
            break
        chunks.append(bytes(chunk))
        total += len(chunk)
    return b"".join(chunks)


def _read_all(fp: Any) -> bytes:
    """The whole (size-checked) file, from its start; the position is left at 0."""
    fp.seek(0)
    data = fp.read()
    fp.seek(0)
    return data


def _jpeg_scans(data: bytes) -> int:
    """SOS markers in a JPEG (an upper bound: 0xFF 0xDA cannot occur in entropy-coded data, but may in metadata)."""
    return data.count(b"\xff\xda")


def _gif_comment_blocks(data: bytes, limit: int) -> int:
    """Comment sub-blocks (and comment extensions) before the first image of a GIF, counting stops past ``limit``
    (and at any structure Pillow will judge itself: the first image, the trailer, an unknown byte, the end). Over
    ``16 * limit`` sub-blocks of other extensions also count as past ``limit`` (``limit + 1``): the walk stops there,
    and a comment bomb behind them must not pass as uncounted."""
    if len(data) < 13:
        return 0
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    comments = blocks = 0
    while pos + 1 < len(data) and data[pos] == 0x21 and comments <= limit and blocks <= 16 * limit:
        is_comment = data[pos + 1] == 0xFE
        comments += is_comment
        pos += 2
        while pos < len(data) and data[pos] and comments <= limit and blocks <= 16 * limit:
            comments += is_comment
            blocks += 1
            pos += 1 + data[pos]
        pos += 1
    return limit + 1 if blocks > 16 * limit else comments


def _prescan(fp: Any, head: bytes) -> None:
    """Refuse, before Pillow parses them, the few valid-looking files whose parsing or decoding cost is far out of
    proportion to their size (see :data:`MAX_JPEG_SCANS`, :data:`MAX_GIF_COMMENT_BLOCKS`)."""
    if head[:3] == b"\xff\xd8\xff":
        n = _jpeg_scans(_read_all(fp))
        if n > MAX_JPEG_SCANS:
            logger.info("JPEG with %d scans refused", n)
            raise ImageError(
                f"The JPEG file has an abnormal structure ({n} scans, where photos have at most a few dozen) and "
                "was not decoded. Save the photo again as an ordinary JPEG and upload it again.",
                code="corrupt",
            )
    elif head[:4] == b"GIF8":
        if _gif_comment_blocks(_read_all(fp), MAX_GIF_COMMENT_BLOCKS) > MAX_GIF_COMMENT_BLOCKS:
            logger.info("GIF with over %d comment blocks refused", MAX_GIF_COMMENT_BLOCKS)
            raise ImageError(
                "The GIF file has an abnormal structure (a huge number of comment or other extension blocks) and "
                "was not decoded. "
                + _UPLOAD_HINT,
                code="corrupt",
            )


# --------------------------------------------------------------------------- #
# conversion to RGB
# --------------------------------------------------------------------------- #

_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def _sixteen_to_u8(arr: np.ndarray) -> np.ndarray:
    """Map 0..65535 -> 0..255 (round(v / 257)); values outside are clipped. In blocks of rows: the int64
    intermediates of a whole 64-megapixel image would take over 1 GB (a 16-bit PNG that size can be a 0.5 MB file)."""
    out = np.empty(arr.shape, np.uint8)
    rows = max(1, (1 << 19) // max(1, arr[0].size)) if arr.ndim and len(arr) else 1
    for i in range(0, len(arr) if arr.ndim else 0, rows):
        a = arr[i:i + rows].astype(np.int64)  # one 4 MB block, worked on in place
        np.clip(a, 0, 65535, out=a)
        a += 128
        a //= 257
        out[i:i + rows] = a
    return out


def _float_to_u8(arr: np.ndarray) -> np.ndarray:
    """NaN -> 0, +inf -> 255, -inf -> 0; all values <= 1 -> scaled by 255; then rounded and clipped to 0..255. In
    blocks of rows, as ``_sixteen_to_u8``: float64 copies of a whole 64-megapixel float TIFF (a 0.4 MB file when
    compressed) took over 2 GB."""
    def blocks():
        rows = max(1, (1 << 19) // max(1, arr[0].size)) if arr.ndim and len(arr) else 1
        for i in range(0, len(arr) if arr.ndim else 0, rows):
            yield i, np.nan_to_num(arr[i:i + rows].astype(np.float64), copy=False, nan=0.0, posinf=255.0, neginf=0.0)

    scale = 255.0 if arr.size and max(float(a.max()) for _, a in blocks()) <= 1.0 else 1.0
    out = np.empty(arr.shape, np.uint8)
    for i, a in blocks():
        a *= scale
        np.rint(a, out=a)
        np.clip(a, 0, 255, out=a)
        out[i:i + len(a)] = a
    return out


#: Pixels per band when flattening transparency (1 MP: a few MB of temporaries per band, whatever the image size).
_FLATTEN_BLOCK_PIXELS = 1 << 20


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """``im`` composited on :data:`BACKGROUND`, as RGB. In bands of rows: an RGBA copy and the alpha channel of a
    whole 64-megapixel image took over 300 MB on top of the image and the result; per band, only a few MB.
    Compositing is per pixel, so the bands give exactly the whole-image result."""
    out = Image.new("RGB", im.size, BACKGROUND)
    width, height = im.size
    rows = max(1, _FLATTEN_BLOCK_PIXELS // max(1, width))
    for top in range(0, height, rows):
        box = (0, top, width, min(height, top + rows))
        band = im.crop(box)  # keeps mode, palette and info["transparency"]
        if band.mode == "La":  # premultiplied grey+alpha: Pillow only converts it to LA
            band = band.convert("LA")
        rgba = band.convert("RGBA")
        out.paste(rgba, box, mask=rgba.getchannel("A"))
    return out


def _to_rgb(im: Image.Image) -> Image.Image:
    try:
        return _to_rgb_unchecked(im)
    except (ValueError, OSError, TypeError) as exc:
        if isinstance(exc, ImageError):
            raise
        logger.info("cannot convert mode %s to RGB: %r", im.mode, exc)
        raise ImageError(
            f"The image uses a colour format ({im.mode}) we cannot convert. "
            "Save it as an ordinary RGB JPEG or PNG and upload it again.",
            code="unsupported_mode",
        ) from exc


def _to_rgb_unchecked(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode in ("RGB", "L", "1") and "transparency" in im.info:  # a tRNS colour: transparent where it matches
        return _flatten_alpha(im)
    if mode == "RGB":
        return im
    if mode in _SIXTEEN_BIT:
        return Image.fromarray(_sixteen_to_u8(np.asarray(im)), "L").convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_u8(np.asarray(im)), "L").convert("RGB")
    if mode in _ALPHA_MODES:
        return _flatten_alpha(im)
    if mode == "P":
        if "transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA":
            return _flatten_alpha(im)
        return im.convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, RGBX, HSV, ...


def _array_to_image(arr: np.ndarray, max_pixels: int) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageError(
            f"The image array has an unsupported shape {tuple(arr.shape)}; expected HxW, HxWx3 or HxWx4.",
            code="unsupported_array",
        )
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise ImageError(f"The image has no pixels ({w} x {h}). {_UPLOAD_HINT}", code="empty")
    if h * w > max_pixels:
        raise _too_many_pixels(w, h, None, max_pixels)
    if arr.dtype == np.uint8:
        a8 = arr
    elif arr.dtype == np.uint16:
        a8 = _sixteen_to_u8(arr)
    elif arr.dtype == np.bool_:
        a8 = arr.astype(np.uint8) * 255
    else:
        raise ImageError(
            f"The image array has an unsupported data type ({arr.dtype}); expected uint8 or uint16.",
            code="unsupported_array",
        )
    a8 = np.ascontiguousarray(a8)
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[a8.ndim if a8.ndim == 2 else a8.shape[2]]
    return Image.fromarray(a8, mode)


# --------------------------------------------------------------------------- #
# decoding
# --------------------------------------------------------------------------- #

def _open_and_decode(fp: BinaryIO, head: bytes, max_pixels: int, max_side: int | None,
                     decode: bool = True) -> Image.Image:
    """Open ``fp`` (positioned anywhere; Pillow seeks to 0), check the header, decode (unless ``decode`` is False:
    then the opened, undecoded image is returned once its header passed)."""
    _prescan(fp, head)
    try:
        im = Image.open(fp, formats=list(_formats))
    except UnidentifiedImageError as exc:
        raise _not_image(head) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_many_pixels(None, None, int(m.group(1)) if m else None, max_pixels) from exc
    except Exception as exc:  # malformed headers: SyntaxError, ValueError, struct.error, OSError...
        logger.info("image header could not be parsed: %r", exc)
        raise ImageError(
            "The image file is damaged and could not be opened. Try exporting or taking the photo again. "
            + _UPLOAD_HINT,
            code="corrupt",
        ) from exc
    if not decode:
        _check_header(im, max_pixels)
        return im
    return _decode(im, max_pixels, max_side)


def _check_header(im: Image.Image, max_pixels: int) -> None:
    """The size the header declares: some pixels, and not more than ``max_pixels`` (decompression bombs)."""
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageError(f"The image has no pixels ({width} x {height}). {_UPLOAD_HINT}", code="empty")
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, None, max_pixels)


def _decode(im: Image.Image, max_pixels: int, max_side: int | None, *, own: bool = True) -> Image.Image:
    """Check the header size, pick frame 0, decode and finish ``im``.

    ``own`` is False for a caller's PIL image: then we do not use ``draft``
    (it would resize the caller's object).
    """
    _check_header(im, max_pixels)  # the decompression-bomb check proper: header dimensions, before decoding
    width, height = im.size

    if im.tell() != 0:  # (n_frames would scan a whole GIF first)
        im.seek(0)  # animated GIF/APNG/WebP, multi-page TIFF: first frame

    if own and max_side and im.format in ("JPEG", "MPO") and max(width, height) > max_side:  # MPO: phones' JPEGs
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, keeping longest side >= max_side.
        scale = max_side / max(width, height)
        im.draft(None, (max(1, int(width * scale + 0.999)), max(1, int(height * scale + 0.999))))

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set elsewhere); truncated uploads will not be detected"
        )
    try:
        im.load()
    except OSError as exc:
        text = str(exc).lower()
        if "truncated" in text or "premature end" in text:
            raise ImageError(
                "The image file is incomplete (it was cut off, e.g. by an interrupted upload or download). "
                "Upload the photo again.",
                code="truncated",
            ) from exc
        logger.info("image data could not be decoded: %r", exc)
        raise ImageError(
            "The image data is damaged and could not be decoded. Try exporting or taking the photo again. "
            + _UPLOAD_HINT,
            code="corrupt",
        ) from exc
    except EOFError as exc:
        raise ImageError(
            "The image file is incomplete (it was cut off, e.g. by an interrupted upload or download). "
            "Upload the photo again.",
            code="truncated",
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:  # SyntaxError, ValueError, struct.error, zlib.error, EOFError ...
        logger.info("image data could not be decoded: %r", exc)
        raise ImageError(
            "The image data is damaged and could not be decoded. Try exporting or taking the photo again. "
            + _UPLOAD_HINT,
            code="corrupt",
        ) from exc
    return _finish(im, max_side, (width, height), own=own)


#: EXIF orientations that ``ImageOps.exif_transpose`` turns or flips the image for (1 is upright).
_EXIF_TURNS = frozenset(range(2, 9))


def _finish(im: Image.Image, max_side: int | None, source_size: tuple[int, int] | None = None, *,
            own: bool = False) -> Image.Image:
    """Upright, RGB, at most ``max_side``; ``source_size`` is the file's own size (before ``draft``), recorded as
    ``info[ORIGINAL_SIZE]`` (upright) when the image handed back is smaller, so that messages quote the user's size."""
    original = im
    source = tuple(source_size or im.size)
    before = im.size
    try:
        # Only when it turns the image: exif_transpose copies even an upright one (256 MB for a 64-megapixel RGBA
        # PNG), and that copy stayed alive next to the file's image and the RGB result.
        if im.getexif().get(ExifTags.Base.Orientation, 1) in _EXIF_TURNS:
            im = ImageOps.exif_transpose(im)
    except Exception as exc:  # broken EXIF must not make a good photo unusable
        logger.warning("ignoring unreadable EXIF orientation: %r", exc)
    if im.size != before:  # turned by 90 or 270 degrees
        source = source[::-1]
    im = _to_rgb(im)
    if own and im is not original:  # our own decoded file, converted: free its pixels before the downscale
        original.close()  # (256 MB for a 64 MP RGBA PNG, held until the caller's `with` had closed it)
    if max_side and max(im.size) > max_side:
        if im is original:
            # our own file's image: a new Image around the same pixels, which thumbnail replaces by the smaller
            # ones (a copy held a second full-size image meanwhile: 192 MB for a 64 MP RGB photo); a caller's: copied
            im = original._new(original.im) if own else im.copy()
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if im is original:
        im = im.copy()  # never hand back the caller's object (or a lazily opened file)
    for key in (ORIGINAL_SIZE, RECORDED_FOR):  # never one that came with the file (a PNG text chunk lands in info too)
        im.info.pop(key, None)
    if im.size != source:
        im.info[ORIGINAL_SIZE], im.info[RECORDED_FOR] = source, im.size
    try:  # EXIF that Pillow cannot parse is dropped, so that nothing downstream trips over it (getexif raises)
        im.getexif()
    except Exception as exc:  # noqa: BLE001 - SyntaxError, struct.error, ... from a damaged EXIF block
        logger.warning("dropping unreadable EXIF: %r", exc)
        im.info.pop("exif", None)
        im = im.copy()  # a new image, whose getexif() reads no EXIF
    return im


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #

def load_image(
    src: ImageSource | None,
    *,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_side: int | None = MAX_SIDE,
) -> Image.Image:
    """Load ``src`` as a decoded, upright, 8-bit RGB image.

    Raises :class:`ImageError` (a ``ValueError``) with a user-facing message
    for anything the user can fix (empty, not an image, truncated, too big,
    missing file ...), and ``TypeError`` for unsupported ``src`` types.
    See the module docstring for the exact policies.
    """
    _ensure_init()
    if src is None:
        raise ImageError(f"No image was provided. {_UPLOAD_HINT}", code="no_image")

    if isinstance(src, Image.Image):
        return _decode(src, max_pixels, max_side, own=False)

    if isinstance(src, np.ndarray):
        return _finish(_array_to_image(src, max_pixels), max_side)

    if isinstance(src, (bytes, bytearray, memoryview)):
        size = memoryview(src).nbytes
        if size == 0:
            raise _empty()
        if size > max_bytes:
            raise _too_big_file(size, max_bytes)
        data = bytes(src) if not isinstance(src, bytes) else src
        return _open_and_decode(io.BytesIO(data), data[:512], max_pixels, max_side)

    if isinstance(src, (str, os.PathLike)):
        return _load_path(Path(os.fspath(src)), max_bytes, max_pixels, max_side)

    if hasattr(src, "read"):
        return _load_stream(src, max_bytes, max_pixels, max_side)

    raise TypeError(
        "load_image expects a path, bytes, a binary file object, a numpy array or a PIL image, "
        f"not {type(src).__name__}"
    )


def check_image_file(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> str:
    """The checks of :func:`load_image` that need no pixel decoding, on a file: it exists, is a non-empty regular
    file within ``max_bytes``, in a format we read, with a header size within ``max_pixels``. Raises the same
    :class:`ImageError`; returns the format's name (one of :data:`ALLOWED_FORMATS`). Cheap in time and memory
    whatever the file (a UI can run it on every upload); damage in the pixel data (a truncated JPEG) shows only when
    :func:`load_image` decodes it.
    """
    _ensure_init()
    return str(_load_path(Path(os.fspath(path)), max_bytes, max_pixels, None, decode=False).format)


def _load_path(path: Path, max_bytes: int, max_pixels: int, max_side: int | None,
               decode: bool = True) -> Image.Image:
    name = path.name or str(path)
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ImageError(
            f"The file '{name}' was not found (it may have been moved or deleted). Choose the photo again.",
            code="not_found",
        ) from exc
    except OSError as exc:
        raise ImageError(f"The file '{name}' could not be read ({exc.strerror or exc}). Choose the photo again.",
                         code="unreadable") from exc
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"'{name}' is a folder, not a photo. {_UPLOAD_HINT}", code="not_a_file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"'{name}' is not a regular file. {_UPLOAD_HINT}", code="not_a_file")
    if st.st_size == 0:
        raise _empty()
    if st.st_size > max_bytes:
        raise _too_big_file(st.st_size, max_bytes)
    try:
        with open(path, "rb") as fp:
            head = fp.read(512)
            fp.seek(0)
            return _open_and_decode(fp, head, max_pixels, max_side, decode)
    except ImageError:
        raise
    except FileNotFoundError as exc:  # deleted between stat and open
        raise ImageError(
            f"The file '{name}' was not found (it may have been moved or deleted). Choose the photo again.",
            code="not_found",
        ) from exc
    except OSError as exc:  # permissions, I/O errors
        raise ImageError(f"The file '{name}' could not be read ({exc.strerror or exc}). Choose the photo again.",
                         code="unreadable") from exc


def _load_stream(fp: Any, max_bytes: int, max_pixels: int, max_side: int | None) -> Image.Image:
    if isinstance(fp, io.TextIOBase):  # (a zip member's mode is "r" yet it is binary: do not sniff ``mode``)
        raise TypeError("load_image needs a file opened in binary mode ('rb'), not text mode")
    remaining: int | None = None
    try:
        if fp.seekable():
            pos = fp.tell()
            end = fp.seek(0, io.SEEK_END)
            fp.seek(pos)
            remaining = end - pos
    except (AttributeError, OSError, ValueError):
        remaining = None
    if remaining is not None:
        if remaining <= 0:
            raise _empty()
        if remaining > max_bytes:
            raise _too_big_file(remaining, max_bytes)
    try:
        data = _read_bounded(fp, max_bytes)
    except TypeError:
        raise
    except OSError as exc:
        raise ImageError(f"The upload could not be read ({exc}). Try again.", code="unreadable") from exc
    if not data:
        raise _empty()
    if len(data) > max_bytes:
        raise _too_big_file(None, max_bytes)
    return _open_and_decode(io.BytesIO(data), data[:512], max_pixels, max_side)
