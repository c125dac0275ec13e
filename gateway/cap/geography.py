"""CAP polygons and circles -> Indonesian area codes, by the areas' centroids.

Warta knows areas by their Kemendagri codes (``gateway.citizen.areas``) but keeps no
boundaries, so a shape is matched against one approximate centroid per area, from the table
below: an area is chosen when its centroid lies inside the polygon or circle. Within a province
that has regencies in the table, the regencies are chosen (the province itself only when the
shape holds every listed regency of it), so a flood polygon over South Jakarta does not reach
all of Jakarta. A shape too small to hold any centroid gets the area whose centroid is nearest
to the shape's centre, if that is within ``NEAREST_KM``; otherwise no area.

The centroids are rough (two decimals, about a kilometre) and the table is short: every
province, and the regencies of the demo agencies and their neighbours. Boundaries (BIG's
administrative polygons) would replace this table; see docs/cap.md.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

NEAREST_KM = 30.0
EARTH_RADIUS_KM = 6371.0

# code -> (latitude, longitude), WGS 84, approximate.
CENTROIDS: dict[str, tuple[float, float]] = {
    # Provinces
    "11": (4.23, 96.91),  # Aceh
    "12": (2.12, 99.54),  # Sumatera Utara
    "13": (-0.74, 100.80),  # Sumatera Barat
    "14": (0.51, 101.70),  # Riau
    "15": (-1.61, 103.02),  # Jambi
    "16": (-3.32, 104.00),  # Sumatera Selatan
    "17": (-3.79, 102.26),  # Bengkulu
    "18": (-4.86, 105.03),  # Lampung
    "19": (-2.74, 106.44),  # Kepulauan Bangka Belitung
    "21": (0.92, 104.45),  # Kepulauan Riau
    "31": (-6.20, 106.85),  # DKI Jakarta
    "32": (-6.90, 107.60),  # Jawa Barat
    "33": (-7.15, 110.14),  # Jawa Tengah
    "34": (-7.88, 110.43),  # DI Yogyakarta
    "35": (-7.54, 112.24),  # Jawa Timur
    "36": (-6.41, 106.06),  # Banten
    "51": (-8.41, 115.19),  # Bali
    "52": (-8.65, 117.36),  # Nusa Tenggara Barat
    "53": (-8.66, 121.08),  # Nusa Tenggara Timur
    "61": (-0.28, 111.48),  # Kalimantan Barat
    "62": (-1.68, 113.38),  # Kalimantan Tengah
    "63": (-3.09, 115.28),  # Kalimantan Selatan
    "64": (0.54, 116.42),  # Kalimantan Timur
    "65": (3.07, 116.04),  # Kalimantan Utara
    "71": (0.62, 123.98),  # Sulawesi Utara
    "72": (-1.43, 121.45),  # Sulawesi Tengah
    "73": (-3.67, 119.97),  # Sulawesi Selatan
    "74": (-4.14, 122.17),  # Sulawesi Tenggara
    "75": (0.70, 122.45),  # Gorontalo
    "76": (-2.84, 119.23),  # Sulawesi Barat
    "81": (-3.24, 130.15),  # Maluku
    "82": (1.57, 127.81),  # Maluku Utara
    "91": (-4.27, 138.08),  # Papua (before the 2022 split)
    "92": (-1.34, 133.17),  # Papua Barat (before the 2022 split)
    # DKI Jakarta
    "31.01": (-5.75, 106.55),  # Kepulauan Seribu
    "31.71": (-6.27, 106.81),  # Jakarta Selatan
    "31.72": (-6.23, 106.90),  # Jakarta Timur
    "31.73": (-6.18, 106.83),  # Jakarta Pusat
    "31.74": (-6.17, 106.76),  # Jakarta Barat
    "31.75": (-6.12, 106.88),  # Jakarta Utara
    # Jawa Barat
    "32.01": (-6.55, 106.80),  # Kabupaten Bogor
    "32.04": (-7.02, 107.54),  # Kabupaten Bandung
    "32.16": (-6.25, 107.15),  # Kabupaten Bekasi
    "32.71": (-6.60, 106.80),  # Kota Bogor
    "32.73": (-6.92, 107.62),  # Kota Bandung
    "32.75": (-6.24, 106.99),  # Kota Bekasi
    "32.76": (-6.40, 106.82),  # Kota Depok
    "32.77": (-6.88, 107.54),  # Kota Cimahi
    # Banten
    "36.01": (-6.65, 105.95),  # Pandeglang
    "36.02": (-6.56, 106.25),  # Lebak
    "36.03": (-6.19, 106.48),  # Kabupaten Tangerang
    "36.04": (-6.14, 106.15),  # Kabupaten Serang
    "36.71": (-6.18, 106.63),  # Kota Tangerang
    "36.72": (-6.00, 106.03),  # Cilegon
    "36.73": (-6.12, 106.15),  # Kota Serang
    "36.74": (-6.29, 106.72),  # Tangerang Selatan
}

_PAIR = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")


class ShapeProblem(ValueError):
    """A polygon or circle that is not written the way CAP 1.2 says."""


@dataclass(frozen=True, slots=True)
class Point:
    lat: float
    lon: float


def _point(text: str) -> Point:
    match = _PAIR.match(text)
    if match is None:
        raise ShapeProblem(f"'{text[:40]}' is not a 'latitude,longitude' pair")
    lat, lon = float(match.group(1)), float(match.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ShapeProblem(f"'{text[:40]}' is outside WGS 84 latitude/longitude ranges")
    return Point(lat, lon)


def parse_polygon(text: str) -> list[Point]:
    """CAP: space-separated 'lat,lon' pairs, at least four, the first equal to the last."""
    points = [_point(pair) for pair in text.split()]
    if len(points) < 4:
        raise ShapeProblem("a polygon needs at least four points")
    if points[0] != points[-1]:
        raise ShapeProblem("a polygon must end at its first point")
    return points


def parse_circle(text: str) -> tuple[Point, float]:
    """CAP: 'lat,lon radius' with the radius in kilometres."""
    parts = text.split()
    if len(parts) != 2:
        raise ShapeProblem("a circle is 'latitude,longitude radius-in-km'")
    try:
        radius = float(parts[1])
    except ValueError:
        raise ShapeProblem(f"'{parts[1][:20]}' is not a radius in kilometres") from None
    if not (0 <= radius <= 5000) or math.isnan(radius):
        raise ShapeProblem("the radius must be between 0 and 5000 km")
    return _point(parts[0]), radius


def inside_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Ray casting on latitude/longitude, fine at the scale of a province."""
    inside = False
    for a, b in itertools.pairwise(polygon):
        if (a.lat > point.lat) != (b.lat > point.lat):
            crossing = a.lon + (point.lat - a.lat) * (b.lon - a.lon) / (b.lat - a.lat)
            if point.lon < crossing:
                inside = not inside
    return inside


def distance_km(a: Point, b: Point) -> float:
    """Great-circle distance (haversine)."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dphi, dlambda = phi2 - phi1, math.radians(b.lon - a.lon)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def _centroids() -> dict[str, Point]:
    return {code: Point(lat, lon) for code, (lat, lon) in CENTROIDS.items()}


def _most_specific(hits: set[str]) -> list[str]:
    """Regencies over their province, unless the shape holds all of the province's regencies."""
    chosen: set[str] = set()
    for code in hits:
        if "." in code:
            chosen.add(code)
            continue
        regencies = {c for c in CENTROIDS if c.startswith(code + ".")}
        if not regencies or regencies <= hits:
            chosen.add(code)
    # A province chosen covers its regencies: keep the list short and exact.
    return sorted(c for c in chosen if not ("." in c and c.split(".", 1)[0] in chosen))


def _nearest(centre: Point, *, within_km: float) -> list[str]:
    best: tuple[float, str] | None = None
    for code, point in _centroids().items():
        if "." not in code and any(c.startswith(code + ".") for c in CENTROIDS):
            continue
        d = distance_km(centre, point)
        if d <= within_km and (best is None or d < best[0]):
            best = (d, code)
    return [] if best is None else [best[1]]


def areas_in_polygon(polygon: Sequence[Point]) -> list[str]:
    hits = {code for code, point in _centroids().items() if inside_polygon(point, polygon)}
    if hits:
        return _most_specific(hits)
    vertices = polygon[:-1]
    centre = Point(
        sum(p.lat for p in vertices) / len(vertices), sum(p.lon for p in vertices) / len(vertices)
    )
    return _nearest(centre, within_km=NEAREST_KM)


def areas_in_circle(centre: Point, radius_km: float) -> list[str]:
    hits = {code for code, point in _centroids().items() if distance_km(centre, point) <= radius_km}
    if hits:
        return _most_specific(hits)
    return _nearest(centre, within_km=NEAREST_KM + radius_km)
