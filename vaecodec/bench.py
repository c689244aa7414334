"""Rate–distortion benchmark: vaecodec against the classical codecs, on the same images, in one run.

Every codec is swept over its quality settings; for each image and setting we record bits per
pixel from the real encoded bytes (for vaecodec the whole `.vae` file), PSNR over RGB and MS-SSIM
of the 8-bit decoded image, and encode/decode time. Curves are averaged over images per setting
and compared with the Bjøntegaard delta rate. The classical codecs come from `imagecodecs` and the
plot from `matplotlib` (the `bench` extra: `pip install 'vaecodec[bench]'`).
"""

import json
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from .images import IMAGE_SUFFIXES

VAECODEC_QUALITIES = (1, 10, 25, 45, 65, 85, 100)


def psnr(reference, decoded):
    """PSNR in dB over all channels of two uint8 arrays (inf when identical)."""
    mse = np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ms_ssim(reference, decoded):
    """MS-SSIM (5 scales, data range 255) of two H×W×3 uint8 arrays; None for images too small
    for five scales."""
    if min(reference.shape[:2]) < 161:
        return None
    import torch
    from pytorch_msssim import ms_ssim as score

    def tensor(a):
        return torch.tensor(a).permute(2, 0, 1)[None].float()

    return float(score(tensor(reference), tensor(decoded), data_range=255))


def bd_rate(rate_a, quality_a, rate_b, quality_b):
    """Bjøntegaard delta rate of curve B against curve A in percent: the average rate difference
    over the overlapping quality range, from cubic fits of log-rate against quality. Negative
    means B needs fewer bits. None when the curves do not overlap or have too few points."""
    if min(len(rate_a), len(rate_b)) < 4:
        return None
    low = max(min(quality_a), min(quality_b))
    high = min(max(quality_a), max(quality_b))
    if high <= low:
        return None
    integrals = []
    for rate, quality in ((rate_a, quality_a), (rate_b, quality_b)):
        fit = np.polyint(np.polyfit(quality, np.log(rate), 3))
        integrals.append((np.polyval(fit, high) - np.polyval(fit, low)) / (high - low))
    return float((np.exp(integrals[1] - integrals[0]) - 1) * 100)


def _vaecodec(effort=0):
    from . import codec  # torch: imported only when vaecodec itself is measured

    def encode(rgb, quality):
        return codec.compress(rgb, quality, effort=effort)

    def decode(data):
        return np.asarray(codec.decompress(data))

    return VAECODEC_QUALITIES, encode, decode


def _classical(name):
    """(settings, encode, decode) of a classical codec from imagecodecs."""
    import imagecodecs as ic

    table = {
        "jpeg": ((10, 20, 30, 45, 60, 75, 85, 92),
                 lambda a, q: ic.jpeg8_encode(a, q, subsampling="444", optimize=True),
                 ic.jpeg8_decode),
        "webp": ((5, 20, 40, 60, 75, 85, 92),
                 lambda a, q: ic.webp_encode(a, q, lossless=False, method=6), ic.webp_decode),
        "avif": ((25, 35, 45, 55, 65, 75, 85),
                 lambda a, q: ic.avif_encode(a, q, speed=4, pixelformat="yuv444", numthreads=1),
                 ic.avif_decode),
        "jpegxl": ((8.0, 5.0, 3.5, 2.5, 1.8, 1.2, 0.8),
                   lambda a, d: ic.jpegxl_encode(a, distance=d, effort=7, numthreads=1),
                   ic.jpegxl_decode),
        "jpeg2000": ((26, 28, 30, 32, 34, 36, 38),
                     lambda a, q: ic.jpeg2k_encode(a, q, numthreads=1), ic.jpeg2k_decode),
    }
    return table[name]


CODECS = ("vaecodec", "jpeg", "webp", "avif", "jpegxl", "jpeg2000")
SETTING_NAMES = {"vaecodec": "quality", "jpeg": "quality", "webp": "quality",
                 "avif": "quality (speed 4, 4:4:4)", "jpegxl": "distance (effort 7)",
                 "jpeg2000": "target PSNR"}


def measure(images, codecs=CODECS, qualities=None, progress=None, effort=0):
    """Raw per-image, per-setting results: {codec: [{setting, image, bytes, bpp, psnr, ms_ssim,
    encode_s, decode_s}, …]}; vaecodec compresses at `effort`."""
    results = {}
    for name in codecs:
        settings, encode, decode = _vaecodec(effort) if name == "vaecodec" else _classical(name)
        if name == "vaecodec" and qualities:
            settings = tuple(qualities)
        rows = results[name] = []
        for image_name, rgb in images:
            for setting in settings:
                start = time.perf_counter()
                data = bytes(encode(rgb, setting))
                middle = time.perf_counter()
                decoded = decode(data)
                end = time.perf_counter()
                rows.append({
                    "setting": setting, "image": image_name, "bytes": len(data),
                    "bpp": 8 * len(data) / (rgb.shape[0] * rgb.shape[1]),
                    "psnr": psnr(rgb, decoded), "ms_ssim": ms_ssim(rgb, decoded),
                    "encode_s": middle - start, "decode_s": end - middle,
                })
            if progress:
                progress(name, image_name)
    return results


def mean_curve(rows):
    """Per setting, the mean over images of bpp, PSNR, MS-SSIM and times, sorted by bpp."""
    curve = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        group = [r for r in rows if r["setting"] == setting]
        point = {"setting": setting}
        for key in ("bpp", "psnr", "ms_ssim", "encode_s", "decode_s"):
            values = [r[key] for r in group if r[key] is not None]
            point[key] = float(np.mean(values)) if values else None
        curve.append(point)
    return sorted(curve, key=lambda p: p["bpp"])


def summarize(results):
    """Mean curves of every codec, and the BD-rates of vaecodec against each other codec."""
    curves = {name: mean_curve(rows) for name, rows in results.items()}
    summary = {"curves": curves, "bd_rate_psnr": {}, "bd_rate_ms_ssim": {}}
    ours = curves.get("vaecodec")
    for name, curve in curves.items():
        if name == "vaecodec" or ours is None:
            continue
        for metric, rate in curve_bd_rates(curve, ours).items():
            summary[f"bd_rate_{metric}"][name] = rate
    return summary


def curve_bd_rates(reference, curve):
    """{"psnr": …, "ms_ssim": …}: the BD-rates of one mean curve against another (None where
    either lacks the metric), MS-SSIM compared in dB, as is customary: −10·log10(1 − MS-SSIM)."""
    rates = {}
    for metric in ("psnr", "ms_ssim"):
        points = [[(p["bpp"], p[metric]) for p in c if p[metric] is not None]
                  for c in (reference, curve)]
        if metric == "ms_ssim":
            points = [[(b, -10 * np.log10(1 - s)) for b, s in side] for side in points]
        rates[metric] = bd_rate(*zip(*points[0]), *zip(*points[1])) if all(points) else None
    return rates


def versions():
    out = {"python": platform.python_version(), "machine": platform.machine(),
           "processor": platform.processor()}
    for package in ("vaecodec", "torch", "numpy", "pillow", "constriction", "imagecodecs"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        import imagecodecs
        for lib in ("jpeg8", "webp", "avif", "jpegxl", "jpeg2k"):
            out[f"lib{lib}"] = getattr(imagecodecs, f"{lib}_version")()
    except (ImportError, AttributeError):
        pass
    return out


def load_images(folder, max_images=None):
    """RGB uint8 arrays of the images in a folder, sorted by name."""
    paths = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES)
    if max_images:
        paths = paths[:max_images]
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append((path.name, np.asarray(image.convert("RGB"))))
    return images


def markdown(summary, info):
    lines = [f"Images: {info['images']} from `{info['folder']}`. bpp from the encoded bytes "
             "(whole `.vae` file for vaecodec), PSNR over RGB and MS-SSIM on the 8-bit decoded "
             "image, times in-process per image on this machine.", ""]
    lines += ["| codec | BD-rate PSNR | BD-rate MS-SSIM |", "|---|---:|---:|"]
    for name in summary["bd_rate_psnr"]:
        cells = [summary[k][name] for k in ("bd_rate_psnr", "bd_rate_ms_ssim")]
        lines.append(f"| vaecodec vs {name} | "
                     + " | ".join("n/a" if c is None else f"{c:+.1f} %" for c in cells) + " |")
    lines += ["", "Negative BD-rate: vaecodec needs that much less rate for the same quality.", ""]
    for name, curve in summary["curves"].items():
        setting = SETTING_NAMES[name] + (f", effort {info['effort']}" if name == "vaecodec"
                                         and info.get("effort") else "")
        lines += [f"### {name} ({setting})", "",
                  "| setting | bpp | PSNR dB | MS-SSIM | encode s | decode s |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for p in curve:
            ssim = "n/a" if p["ms_ssim"] is None else f"{p['ms_ssim']:.4f}"
            lines.append(f"| {p['setting']:g} | {p['bpp']:.3f} | {p['psnr']:.2f} | {ssim} | "
                         f"{p['encode_s']:.3f} | {p['decode_s']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def plot(summary, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5))
    for name, curve in summary["curves"].items():
        ours = name == "vaecodec"
        axis.plot([p["bpp"] for p in curve], [p["psnr"] for p in curve], marker="o",
                  markersize=4, linewidth=2.5 if ours else 1.2, zorder=3 if ours else 2,
                  color="black" if ours else None, label=name)
    axis.set_xlabel("bits per pixel")
    axis.set_ylabel("PSNR (RGB) dB")
    axis.set_xlim(0, 2.0)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run(folder, out_dir, codecs=CODECS, qualities=None, max_images=None, progress=None,
        effort=0):
    """Measure, summarize and write results.json, results.md and rd.png into out_dir."""
    images = load_images(folder, max_images)
    if not images:
        raise ValueError(f"no images in {folder}")
    results = measure(images, codecs, qualities, progress, effort)
    summary = summarize(results)
    info = {"folder": str(folder), "images": len(images), "effort": effort,
            "versions": versions()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"info": info, "summary": summary, "raw": results}, indent=1))
    (out / "results.md").write_text(markdown(summary, info))
    try:
        plot(summary, out / "rd.png")
    except ImportError:
        pass
    return summary
