"""Upload fixtures for the API tests, made in code: a photo carrying EXIF with GPS, and a
short clip made with ffmpeg's test sources (with a location tag in its metadata)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from PIL import Image

GPS_IFD = 0x8825
SECRET_PLACE = "+48.8584+002.2945/"


def jpeg_with_gps(width: int = 1600, height: int = 1200, *, seed: int = 0) -> bytes:
    """A gradient photo with EXIF orientation 1, a camera model and a GPS position."""
    image = Image.linear_gradient("L").resize((width, height))
    colour = Image.merge("RGB", (image, image.rotate(90 + seed), image.transpose(0)))
    exif = Image.Exif()
    exif[0x0110] = "pinhole test camera"  # Model
    exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    out = io.BytesIO()
    colour.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def video_with_location(path: Path, *, seconds: float = 5.0, size: str = "320x240") -> Path:
    """An H.264/AAC MP4 of `seconds` with a GPS location in its metadata."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc=size={size}:rate=15:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", "-metadata", f"location={SECRET_PLACE}",
         "-movflags", "+faststart", str(path)],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path
