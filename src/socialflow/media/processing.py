"""What processing does to a file, off the event loop: identify it by its bytes, decode it
within the pixel limit, apply its orientation, and write derivatives that carry no metadata.

Pure functions of a readable file and the settings; the actor (media/tasks.py) reads the file
from storage, calls them in a worker thread and stores what they return.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

# HEIC/HEIF through libheif (pillow-heif), registered with Pillow once.
try:
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - a dependency of the project
    pass

# Derivatives: name → (longest side, square crop)
SIZES: dict[str, tuple[int, bool]] = {
    "thumb": (400, True),
    "small": (640, False),
    "medium": (1280, False),
    "large": (2048, False),
}
FORMATS = {"webp": ("WEBP", "image/webp"), "jpeg": ("JPEG", "image/jpeg")}
CHUNK = 1024 * 1024


class Rejected(Exception):
    """The file is not media this product takes; the message says why, for the item."""


@dataclass(frozen=True)
class Identified:
    kind: str  # image | video
    format: str  # jpeg, png, webp, gif, heif, mp4, mov, webm


@dataclass
class Rendered:
    name: str  # "thumb.webp"
    content_type: str
    body: bytes
    width: int
    height: int
    format: str


@dataclass
class ImageFacts:
    width: int
    height: int
    dominant_color: str
    blurhash: str
    phash: str
    renditions: list[Rendered] = field(default_factory=list)


def sha256_of(fp: IO[bytes]) -> str:
    digest = hashlib.sha256()
    fp.seek(0)
    while chunk := fp.read(CHUNK):
        digest.update(chunk)
    fp.seek(0)
    return digest.hexdigest()


# ISO base media file brands (the `ftyp` box): HEIF images, then MP4 and QuickTime video.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_MP4_BRANDS = {
    b"isom",
    b"iso2",
    b"iso4",
    b"iso5",
    b"iso6",
    b"mp41",
    b"mp42",
    b"avc1",
    b"M4V ",
    b"dash",
    b"mmp4",
}
_MOV_BRANDS = {b"qt  "}


def identify(head: bytes) -> Identified:  # noqa: PLR0911 - a return per format
    """What the file is, from its first bytes (never its name or declared type).

    Written here rather than taken from a sniffing library: the accepted set is eight formats
    whose signatures are fixed, and the ISO brands that tell HEIF, MP4 and QuickTime apart are
    what the libraries get wrong (mif1, qt)."""
    if head.startswith(b"\xff\xd8\xff"):
        return Identified("image", "jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Identified("image", "png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Identified("image", "gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Identified("image", "webp")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return Identified("image", "heif")
        if brand in _MOV_BRANDS:
            return Identified("video", "mov")
        if brand in _MP4_BRANDS:
            return Identified("video", "mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3") and b"webm" in head[:64]:
        return Identified("video", "webm")
    if not head:
        raise Rejected("the file is empty")
    raise Rejected(
        "the file is not a JPEG, PNG, WebP, GIF, HEIC/HEIF, MP4, MOV or WebM (by its content)"
    )


# Decoded full-size images held at once per process (a 12 MP photo is 36 MB decoded): one,
# and its renditions are encoded on every core meanwhile.
DECODES = threading.BoundedSemaphore(1)
ENCODERS = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="encode")


def process_image(fp: IO[bytes], max_pixels: int, focal: tuple[float, float] | None) -> ImageFacts:
    """Decode (the pixel count checked from the header first: no bomb is ever decoded), turn
    upright by its EXIF orientation, and render every derivative in WebP and JPEG, never
    upscaled, with no metadata at all (EXIF, GPS, XMP, ICC, comments).

    Each size is resampled from the next larger one (Hamming from the full image, Lanczos
    after): the full image is resampled once, and dropped as soon as the largest exists."""
    with DECODES:
        upright = _decoded(fp, max_pixels)
        width, height = upright.size
        ladder = sorted(
            ((side, name) for name, (side, square) in SIZES.items() if not square), reverse=True
        )
        sized: dict[str, Image.Image] = {}
        source = upright
        for side, name in ladder:
            resample = Image.Resampling.HAMMING if source is upright else Image.Resampling.LANCZOS
            sized[name] = _fit_within(source, side, resample)
            source = sized[name]
        # The square thumbnail from the smallest size that still covers it (the full image
        # only for a panorama too narrow for the others).
        edge = min(SIZES["thumb"][0], width, height)
        covering = [sized[n] for _, n in reversed(ladder) if min(sized[n].size) >= edge]
        sized["thumb"] = ImageOps.fit(
            covering[0] if covering else upright,
            (edge, edge),
            Image.Resampling.LANCZOS,
            centering=focal or (0.5, 0.5),
        )
        del upright, source, covering  # the full image: gone before encoding
    small = sized["small"]
    facts = ImageFacts(
        width=width,
        height=height,
        dominant_color=_dominant(sized["thumb"]),
        blurhash=_blurhash(sized["thumb"]),
        phash=_phash(small),
    )
    jobs = [
        (name, image, extension, pil_format, content_type)
        for name, image in sized.items()
        for extension, (pil_format, content_type) in FORMATS.items()
    ]
    # Encoders release the GIL: the renditions of one image are encoded on every core.
    bodies = ENCODERS.map(lambda job: _encode(job[1], job[3]), jobs)
    for (name, image, extension, _, content_type), body in zip(jobs, bodies, strict=True):
        facts.renditions.append(
            Rendered(
                name=f"{name}.{extension}",
                content_type=content_type,
                body=body,
                width=image.width,
                height=image.height,
                format=extension,
            )
        )
    return facts


def _decoded(fp: IO[bytes], max_pixels: int) -> Image.Image:
    """The image upright in RGB (its first frame), or Rejected."""
    fp.seek(0)
    try:
        image = Image.open(fp)
        width, height = image.size
        if width * height > max_pixels:
            raise Rejected(
                f"{width}x{height} is {width * height} pixels, over the {max_pixels} allowed"
            )
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        flat = _flattened(image)
        flat.info = {}  # comments, ICC, EXIF …: nothing of the original travels on
        return flat
    except Rejected:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise Rejected(f"the image cannot be decoded: {exc}") from exc


def _fit_within(image: Image.Image, side: int, resample: Image.Resampling) -> Image.Image:
    """`image` with its longest side at most `side` (never larger than it is)."""
    scale = side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, resample)


def _flattened(image: Image.Image) -> Image.Image:
    """RGB; transparency over white (JPEG has none), only the first frame of an animation."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _encode(image: Image.Image, pil_format: str) -> bytes:
    out = io.BytesIO()
    if pil_format == "JPEG":
        image.save(out, "JPEG", quality=82, optimize=True, progressive=True)
    else:
        image.save(out, "WEBP", quality=80, method=2)  # 4: 4x the time for ~3 % smaller
    return out.getvalue()


def _dominant(image: Image.Image) -> str:
    small = image.resize((64, 64), Image.Resampling.BOX)
    palette = small.quantize(colors=5, method=Image.Quantize.MEDIANCUT)
    counts = sorted(palette.getcolors() or [], reverse=True)
    colours = palette.getpalette() or [0, 0, 0]
    index = int(counts[0][1]) if counts else 0  # type: ignore[call-overload]
    red, green, blue = colours[index * 3 : index * 3 + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"


def _blurhash(image: Image.Image) -> str:
    import blurhash

    small = image.resize((64, 64), Image.Resampling.BOX)
    return str(blurhash.encode(small, x_components=4, y_components=3))


def _phash(image: Image.Image) -> str:
    import imagehash

    return str(imagehash.phash(image))


@dataclass
class VideoFacts:
    width: int
    height: int
    duration_s: float | None
    codecs: str
    poster: Image.Image


def probe_video(path: str, max_pixels: int) -> VideoFacts:
    """Duration, frame size and codecs, and the first frame as the poster (ffmpeg from
    imageio-ffmpeg's wheel: nothing to install on the machine). The frame size is checked
    against the pixel limit before a frame is decoded."""
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(
        path, pix_fmt="rgb24", input_params=["-protocol_whitelist", "file"]
    )
    try:
        meta = next(frames)
        width, height = meta["size"]
        if width * height > max_pixels:
            raise Rejected(
                f"{width}x{height} frames are {width * height} pixels, over the "
                f"{max_pixels} allowed"
            )
        first = next(frames)
    except Rejected:
        raise
    except (RuntimeError, StopIteration, KeyError, ValueError, OSError) as exc:
        raise Rejected(f"the video cannot be decoded: {exc}") from exc
    finally:
        frames.close()
    codecs = "/".join(c for c in (meta.get("codec"), meta.get("audio_codec")) if c)
    duration = meta.get("duration")
    poster = Image.frombytes("RGB", (width, height), first)
    return VideoFacts(width, height, float(duration) if duration else None, codecs, poster)


# Per-platform variants: name → (width, height).
PROFILES: dict[str, tuple[int, int]] = {
    "instagram_portrait": (1080, 1350),
    "instagram_square": (1080, 1080),
    "x_landscape": (1600, 900),
    "linkedin": (1200, 627),
    "story": (1080, 1920),
}


def render_variant(
    fp: IO[bytes], size: tuple[int, int], focal: tuple[float, float]
) -> tuple[bytes, int, int]:
    """`size` cut around the focal point from the item's largest derivative (already upright
    and metadata-free), as JPEG; never upscaled: a smaller source gives a smaller variant of
    the same aspect ratio."""
    with Image.open(fp) as source:
        source.load()
        width, height = size
        scale = min(1.0, source.width / width, source.height / height)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        cut = ImageOps.fit(source.convert("RGB"), target, Image.Resampling.LANCZOS, centering=focal)
    return _encode(cut, "JPEG"), cut.width, cut.height
