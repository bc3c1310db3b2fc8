"""The organs, vessels, muscles and bones of the phantom, each painted from the anatomy tables."""

from __future__ import annotations

import math

import numpy as np

from SwinBOBLib.phantom.anatomy import _SPINE_SEGMENTS, _TORSO_POWER, _Anatomy
from SwinBOBLib.phantom.body import _body_masks, _cavity_mask, _limb_paths, _torso_profile
from SwinBOBLib.phantom.shapes import _Canvas, _ellipsoid, _Grid, _ids, _lut, _over, _scheme, _sides, _tube


def _paint_body(canvas: _Canvas) -> None:
    """Subcutaneous fat everywhere in the body, muscle in the wall, inner fat in the cavity."""
    grid, anat, labels = canvas.grid, canvas.anat, canvas.labels
    outer, core = _body_masks(grid, anat)
    cavity = _cavity_mask(grid, anat)
    labels[outer] = _scheme().lookup("subcutaneous_fat")
    labels[core] = _scheme().lookup("muscle")
    labels[cavity & core] = _scheme().lookup("inner_fat")
    band = np.abs(grid.z[None, None, :] - canvas.diaphragm[:, :, None]) <= 3.0
    labels[band & cavity & core] = _scheme().lookup("muscle")


def _paint_lungs(canvas: _Canvas) -> None:
    """Both lungs fill the thoracic cavity beside the mediastinum; fissures split the lobes."""
    grid, anat = canvas.grid, canvas.anat
    box = grid.box((-400, -400, 150), (400, 400, 480))
    if box is None:
        return
    x, y, z = grid.coords(box)
    midline = -5.0 + anat.rng.normal(0, 2)
    half_width = np.interp(z, [150, 300, 400, 480], [24, 22, 16, 14])
    spine = (np.abs(x) < 38) & (y < anat.spine_at(z) + 22)
    lung = (np.abs(x - midline) > half_width) & ~spine & canvas.above_diaphragm(box)
    lung &= canvas.labels[box] == _scheme().lookup("inner_fat")
    oblique = 305.0 + anat.rng.normal(0, 8) - 0.9 * y   # fissure height; lower lobe below it
    horizontal = 300.0 + anat.rng.normal(0, 8)
    right, left = lung & (x > midline), lung & (x < midline)
    lower = z < oblique
    pieces = {
        "lung_lower_lobe_left": left & lower, "lung_upper_lobe_left": left & ~lower,
        "lung_lower_lobe_right": right & lower, "lung_middle_lobe_right": right & ~lower & (z < horizontal),
        "lung_upper_lobe_right": right & ~lower & (z >= horizontal)}
    for name, mask in pieces.items():
        canvas.paint(name, [(box, mask)], _over("soft"))


def _bowel_field(grid: _Grid, box, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field (~unit variance) whose upper level sets look like bowel loops."""
    x, y, z = grid.coords(box)
    field_ = 0.0
    for _ in range(6):
        direction = rng.normal(size=3)
        k = 2 * np.pi / rng.uniform(55, 80) * direction / np.linalg.norm(direction)
        field_ = field_ + np.cos(k[0] * x + k[1] * y + k[2] * z + rng.uniform(0, 2 * np.pi))
    return field_ / np.sqrt(3.0)


def _paint_intestine(canvas: _Canvas) -> None:
    """Small-bowel loops in the abdominal cavity (fewer with more visceral fat) and the colon frame."""
    anat, grid = canvas.anat, canvas.grid
    box = grid.box((-200, -120, -110), (200, 200, 175))
    if box is not None:
        threshold = -0.6 + 0.8 * anat.visceral
        loops = _bowel_field(grid, box, anat.rng) > threshold
        x, y, z = grid.coords(box)
        loops &= y > anat.spine_at(z) + 20
        canvas.paint("intestine", [(box, loops)], _over("soft"), canvas.below_diaphragm)
    rectum_y = anat.spine_at(-100.0) + 30
    colon = [(85, 0, -40), (88, 10, 130), (60, 60, 140), (0, 70, 118), (-60, 60, 140), (-85, 10, 170),
             (-85, -5, 40), (-75, 0, -50), (-40, 25, -75), (0, rectum_y + 10, -90), (0, rectum_y, -120),
             (0, -15, -150)]
    radii = [22, 22, 20, 20, 20, 20, 20, 20, 18, 18, 17, 15]
    canvas.tube("intestine", colon, radii, over=_over("soft"), region=canvas.below_diaphragm)


def _paint_abdomen(canvas: _Canvas) -> None:
    """Solid and hollow abdominal organs below the diaphragm."""
    c, below, anat = canvas, canvas.below_diaphragm, canvas.anat
    liver_over = _over("organ")
    c.ellipsoid("liver", (60, 0, 215), (85, 80, 75), (0, 0, 10), over=liver_over, region=below)
    c.ellipsoid("liver", (-25, 40, 235), (60, 38, 35), (0, 0, -10), over=liver_over, region=below)
    spleen = anat.factor(0.8, 1.25)
    c.ellipsoid("spleen", (-90, -42, 228), np.array([22, 50, 45]) * spleen, (0, 10, 30), region=below)
    c.ellipsoid("stomach", (-55, -2, 240), (35, 33, 35), region=below)
    c.tube("stomach", [(-55, 5, 235), (-50, 30, 190), (-25, 50, 162), (10, 45, 160), (30, 35, 165)],
           [33, 30, 24, 18, 12], over=_over("organ"), region=below)
    organs = _over("organ") | _lut(_ids("liver", "stomach", "spleen"))
    for sign, side in _sides():
        height = 115.0 if side == "right" else 133.0
        c.ellipsoid(f"kidney_{side}", (sign * 75, -30, height), (28, 22, 55), (0, sign * 12, sign * -30), over=organs)
        c.ellipsoid(f"adrenal_gland_{side}", (sign * 45, -20, height + 68), (14, 5, 18), (0, 0, sign * 30),
                    over=organs, sd=2.0)
    c.ellipsoid("gallbladder", (50, 50, 150), (14, 16, 32), (30, 0, 0), over=organs, region=below)
    c.tube("pancreas", [(45, 15, 125), (25, 15, 140), (0, 20, 150), (-40, 5, 160), (-75, -15, 180)],
           [16, 14, 12, 11, 10], over=organs, region=below)
    c.tube("duodenum", [(30, 35, 165), (50, 20, 160), (58, 10, 125), (50, 10, 95), (10, 15, 88),
                        (-25, 15, 100), (-35, 20, 125)], 12, over=organs, region=below)


def _paint_pelvis(canvas: _Canvas) -> None:
    fill = canvas.anat.factor(0.7, 1.3)
    canvas.ellipsoid("urinary_bladder", (0, 38, -88), np.array([42, 35, 33]) * fill, over=_over("organ"))
    canvas.ellipsoid("prostate", (0, 32, -140), (18, 14, 16), over=_over("organ"), sd=2.0)


def _paint_thorax(canvas: _Canvas) -> None:
    """Heart, left atrial appendage, airway, oesophagus and thyroid."""
    c, above = canvas, canvas.above_diaphragm
    c.ellipsoid("heart", (-18, 40, 300), (62, 45, 50), (0, 20, -35), over=_over("thorax"), region=above)
    c.ellipsoid("atrial_appendage_left", (-52, 25, 332), (14, 10, 12), over=_over("thorax"), sd=2.0)
    airway = _over("thorax") | _lut(_ids("esophagus"))
    c.tube("trachea", [(0, 12, 620), (0, 8, 470), (0, -2, 420), (0, -10, 375)], 9, over=airway)
    for end in ((28, -15, 352), (-35, -15, 348)):
        c.tube("trachea", [(0, -10, 378), end], 6, over=airway, sd=0.0)
    spine = canvas.anat.spine_at
    esophagus = [(2, spine(620) + 20, 620), (2, spine(470) + 22, 470), (4, spine(380) + 26, 380),
                 (4, spine(300) + 30, 300), (-10, -12, 262), (-30, -2, 245), (-45, 3, 235)]
    c.tube("esophagus", esophagus, 8, over=_over("thorax"), sd=1.0)
    for sign in (1.0, -1.0):
        c.ellipsoid("thyroid_gland", (sign * 19, 8, 490), (8, 9, 21), over=_over("soft"), sd=1.0)
    c.tube("thyroid_gland", [(19, 14, 482), (0, 22, 479), (-19, 14, 482)], 5, over=_over("soft"), sd=0.5)


def _paint_muscles(canvas: _Canvas) -> None:
    """Iliopsoas, gluteal and autochthonous back muscles (they only replace soft tissue)."""
    c, spine, over = canvas, canvas.anat.spine_at, _over("muscle")
    for sign, side in _sides():
        psoas = [(sign * 25, spine(190) + 5, 190), (sign * 40, spine(100) + 5, 100),
                 (sign * 52, spine(20) + 10, 20), (sign * 70, 5, -50), (sign * 78, 35, -95),
                 (sign * 105, 25, -140)]
        c.tube(f"iliopsoas_{side}", psoas, [10, 16, 24, 28, 20, 14], over=over)
        c.ellipsoid(f"gluteus_maximus_{side}", (sign * 80, -85, -110), (70, 32, 85), (0, sign * 25, 0), over=over)
        normal = np.array([math.cos(math.radians(38)) * sign, -math.sin(math.radians(38)), 0.0])
        ilium = np.array([sign * 82, -18, 10.0])
        angles = (0, 0, -sign * 38)
        c.ellipsoid(f"gluteus_minimus_{side}", ilium + 13 * normal + (0, 0, -20), (9, 42, 38), angles,
                    over=over, sd=2.0)  # deepest, so painted first
        c.ellipsoid(f"gluteus_medius_{side}", ilium + 26 * normal, (16, 58, 55), angles, over=over)
        heights = np.array([620, 460, 300, 150, 40, -40])
        back = [(sign * 30, spine(h) - 38, h) for h in heights]
        c.tube(f"autochthon_{side}", back, [14, 18, 20, 24, 26, 16], over=over)


def _paint_vessels(canvas: _Canvas) -> None:
    """Aorta and its branches, caval, portal, iliac and pulmonary veins as tubes (mm radii)."""
    c, spine = canvas, canvas.anat.spine_at
    descending = [(-22 + 0.05 * (360 - h), spine(h) + 30, h) for h in (360, 300, 230, 170, 110, 45)]
    c.tube("aorta", [(8, 35, 330), (5, 28, 385), (-8, 10, 405), (-20, -15, 395), *descending],
           [14, 14, 13, 12, 12, 12, 11, 11, 10, 10], sd=1.0)
    c.tube("inferior_vena_cava", [(14, spine(40) + 27, 40), (22, spine(120) + 28, 120),
                                  (25, spine(180) + 32, 180), (28, -5, 230), (20, 15, 265), (18, 25, 282)], 11)
    c.tube("portal_vein_and_splenic_vein", [(45, 5, 195), (20, 10, 165), (0, 8, 150), (-40, -5, 160),
                                            (-80, -25, 190)], 7)
    c.tube("superior_vena_cava", [(22, 30, 310), (25, 32, 360), (25, 32, 400)], 10)
    c.tube("brachiocephalic_vein_right", [(25, 32, 398), (38, 25, 440), (45, 15, 470)], 7)
    c.tube("brachiocephalic_vein_left", [(25, 32, 398), (-10, 38, 412), (-45, 25, 440), (-55, 15, 465)], 7)
    c.tube("brachiocephalic_trunk", [(0, 18, 403), (12, 15, 425), (18, 12, 440)], 7, sd=0.5)
    c.tube("subclavian_artery_right", [(18, 12, 440), (50, 5, 446), (100, -5, 428), (135, -10, 412)], 5, sd=0.5)
    c.tube("common_carotid_artery_right", [(18, 12, 440), (30, 0, 475), (33, -6, 620)], 4.5, sd=0.5)
    c.tube("common_carotid_artery_left", [(-8, 12, 406), (-24, 4, 450), (-31, 0, 475), (-33, -6, 620)], 4.5,
           sd=0.5)
    c.tube("subclavian_artery_left", [(-18, -2, 402), (-35, -5, 438), (-70, -5, 442), (-100, -5, 428),
                                      (-135, -10, 412)], 5, sd=0.5)
    for sign, side in _sides():
        c.tube(f"iliac_vena_{side}", [(12, spine(40) + 24, 40), (sign * 38, spine(-10) + 26, -20),
                                      (sign * 55, 20, -70), (sign * 66, 44, -112)], 8)
        c.tube(f"iliac_artery_{side}", [(-8, spine(45) + 30, 45), (sign * 40, spine(-10) + 34, -15),
                                        (sign * 62, 28, -68), (sign * 78, 50, -110)], 6.5)
        for height in (318, 288):
            c.tube("pulmonary_vein", [(-5, 12, 300), (sign * 30, 0, height), (sign * 62, -8, height)], 5.5, sd=1.0)


def _rib_path(anat: _Anatomy, level_z: float, number: int, sign: float):
    """Centre line of rib ``number`` (1..12) on one side and the fraction that is cartilage."""
    end = {11: 0.55, 12: 0.45}.get(number, 0.97 if number <= 7 else 0.85)
    theta = np.linspace(0.06, end, 10) * np.pi
    z = level_z - (25 + 4 * number) * theta / np.pi
    a, b, c = _torso_profile(z, anat, grow=-17.0)
    p = _TORSO_POWER
    x = sign * np.maximum(a * np.sin(theta) ** (2 / p), 10)
    y = c - b * np.sign(np.cos(theta)) * np.abs(np.cos(theta)) ** (2 / p)
    if number <= 7:
        x[-1] = sign * 18
    return np.column_stack([x, y, z]), (0.75 if number <= 10 else 1.0)


def _paint_thoracic_cage(canvas: _Canvas, levels) -> None:
    """Ribs (bone_other), costal cartilages and the sternum."""
    over = _over("bone")
    for name, z0, z1, *_ in levels:
        if not name.startswith("T"):
            continue
        number = int(name[1:])
        for sign, _side in _sides():
            path, bony = _rib_path(canvas.anat, 0.5 * (z0 + z1), number, sign)
            split = max(2, int(round(bony * (len(path) - 1))))
            canvas.tube("bone_other", path[:split + 1], 5.0, over=over, sd=0.0)
            if split < len(path) - 1:
                canvas.tube("costal_cartilages", path[split:], 5.0, over=over, sd=0.0)
    top, bottom = 432.0, 262.0
    _, b_top, c_top = _torso_profile(np.array([top]), canvas.anat)
    _, b_bot, c_bot = _torso_profile(np.array([bottom]), canvas.anat)
    front = np.array([(0, c_top[0] + b_top[0] - 16, top), (0, c_bot[0] + b_bot[0] - 16, bottom)])
    for (p0, p1), half_width in (((front[0], 0.8 * front[0] + 0.2 * front[1]), 26),
                                 ((0.8 * front[0] + 0.2 * front[1], front[1]), 15)):
        center = 0.5 * (p0 + p1)
        tilt = math.degrees(math.atan2(p1[1] - p0[1], p0[2] - p1[2]))
        canvas.ellipsoid("sternum", center, (half_width, 7, 0.5 * abs(p0[2] - p1[2]) + 12), (tilt, 0, 0),
                         over=over, sd=1.0, power=3.0)


def _paint_limb_bones(canvas: _Canvas) -> None:
    """Shoulder girdle, humeri, forearm bones, femurs and lower-leg bones."""
    c, over = canvas, _over("bone")
    paths = [limb[0] for limb in _limb_paths(canvas.anat)]  # right arm, right leg, left arm, left leg
    _, depth, centre = _torso_profile(np.array([425.0]), canvas.anat)
    front_y = float(centre[0] + depth[0])  # anterior muscle-wall surface at the sternal notch
    for (sign, side), arm, leg in zip(_sides(), paths[0::2], paths[1::2]):
        shoulder = arm[0]
        clavicle = [(sign * 18, front_y - 12, 428), (sign * 70, front_y - 26, 434), (sign * 130, 0, 436),
                    (sign * 148, -12, 430)]
        c.tube(f"clavicula_{side}", clavicle, 7, over=over, sd=1.0)
        c.ellipsoid(f"scapula_{side}", (sign * 88, -82, 350), (48, 6, 72), (0, 0, sign * 28), over=over,
                    sd=2.0, power=3.0)
        c.tube(f"scapula_{side}", [(sign * 118, -62, 395), shoulder + (-sign * 22, -8, -4)], 10, over=over, sd=0.0)
        c.ellipsoid(f"humerus_{side}", shoulder + (-sign * 4, 0, -6), (22, 22, 22), over=over, sd=0.5)
        c.tube(f"humerus_{side}", [shoulder + (0, 0, -10), arm[1] + (0, 0, 15)], [11, 12], over=over, sd=0.0)
        c.ellipsoid(f"humerus_{side}", arm[1] + (0, 0, 12), (20, 13, 14), over=over, sd=0.5)
        for offset in (-9.0, 9.0):
            c.tube("bone_other", [arm[1] + (0, offset, 0), arm[2] + (0, offset, 0), arm[3]], [7, 6, 8],
                   over=over, sd=0.0)
        head = (sign * 88, 5, -95)
        c.ellipsoid(f"femur_{side}", head, (23, 23, 23), over=over, sd=1.0)
        c.tube(f"femur_{side}", [head, (sign * 135, -5, -115)], 14, over=over, sd=0.0)
        c.ellipsoid(f"femur_{side}", (sign * 138, -10, -112), (18, 22, 28), over=over, sd=1.0)
        knee = leg[2]
        c.tube(f"femur_{side}", [(sign * 130, 0, -125), (sign * 108, 4, -300), knee + (0, 5, 20)], [15, 14, 14],
               over=over, sd=0.0)
        c.ellipsoid(f"femur_{side}", knee + (0, 0, 5), (38, 30, 22), over=over, sd=1.0)
        c.ellipsoid("bone_other", knee + (0, 2, -32), (35, 28, 14), over=over, sd=1.0)
        c.tube("bone_other", [knee + (0, 2, -40), leg[4] + (0, 8, 20)], 14, over=over, sd=0.0)
        c.tube("bone_other", [knee + (sign * 30, -12, -45), leg[4] + (sign * 25, -5, 20)], 6, over=over, sd=0.0)


def _paint_pelvic_bones(canvas: _Canvas) -> None:
    """Hip bones (ilium wing, acetabulum, pubis, ischium) and the sacrum."""
    c, spine, over = canvas, canvas.anat.spine_at, _over("bone")
    for sign, side in _sides():
        name = f"hip_{side}"
        c.ellipsoid(name, (sign * 82, -18, 10), (8, 62, 62), (0, sign * 8, -sign * 38), over=over, sd=2.0)
        c.ellipsoid(name, (sign * 55, -52, 0), (14, 22, 45), (0, 0, -sign * 30), over=over, sd=1.0)
        c.ellipsoid(name, (sign * 72, 3, -86), (24, 30, 32), over=over, sd=1.0)
        c.tube(name, [(sign * 82, -16, -15), (sign * 74, 0, -75)], 17, over=over, sd=0.5)  # ilium body
        c.tube(name, [(sign * 75, 25, -100), (sign * 30, 55, -118), (sign * 10, 60, -122)], [10, 10, 8], over=over,
               sd=0.5)
        c.tube(name, [(sign * 80, -5, -100), (sign * 62, -25, -150)], 14, over=over, sd=0.5)
        c.tube(name, [(sign * 62, -25, -150), (sign * 20, 35, -145), (sign * 10, 55, -132)], 8, over=over, sd=0.5)
    for z, radii in ((-22.0, (45, 20, 28)), (-62.0, (30, 16, 25)), (-98.0, (14, 11, 19))):
        c.ellipsoid("sacrum", (0, spine(z) - 4, z), radii, over=over, sd=1.0)


def _vertebral_levels():
    """[(name, z_bottom, z_top, half_width, half_depth, canal_radius)] from L5 upwards (template mm)."""
    levels, z = [], 0.0
    for prefix, count, height, disc, rx, ry, canal in _SPINE_SEGMENTS:
        numbers = range(count, 0, -1)
        for number in numbers:
            z += disc * 0.8
            levels.append((f"{prefix}{number}", z, z + height, rx, ry, canal))
            z += height + disc * 0.2
    return levels


def _canal_y(anat: _Anatomy, z, ry, canal) -> np.ndarray:
    return anat.spine_at(z) - ry - canal - 1.0


def _paint_vertebra(canvas: _Canvas, level, next_level) -> None:
    """Body (elliptic cylinder), disc above it, and posterior elements of one vertebra."""
    name, z0, z1, rx, ry, canal = level
    anat, grid, over, mid = canvas.anat, canvas.grid, _over("bone"), 0.5 * (z0 + z1)
    y_body, y_canal = float(anat.spine_at(mid)), float(_canal_y(anat, mid, ry, canal))
    body = _ellipsoid(grid, (0, y_body, mid), (rx, ry, 0.5 * (z1 - z0)), power=6.0)
    canvas.paint("vertebra_body", body, over)
    if next_level is not None:
        top = next_level[1]
        disc = _ellipsoid(grid, (0, float(anat.spine_at(0.5 * (z1 + top))), 0.5 * (z1 + top)),
                          (rx * 0.95, ry * 0.95, 0.5 * (top - z1)), power=6.0)
        canvas.paint("IVD", disc, over)
    half = 0.5 * (z1 - z0) * 0.8
    arch = _tube(grid, [(0, y_canal, mid - half), (0, y_canal, mid + half)], canal + 6.0, smooth=False)
    arch = [(box, mask & (grid.coords(box)[1] < y_canal + 0.5 * canal)) for box, mask in arch]
    spinous_length = 26.0 if name[0] != "C" else 14.0
    transverse = 2.2 * rx if name[0] != "C" else 2.0 * rx
    pieces = arch + _ellipsoid(grid, (0, y_canal - canal - 0.5 * spinous_length, mid - 4),
                               (4, 0.5 * spinous_length, half), power=3.0)
    pieces += _ellipsoid(grid, (0, y_canal + 2, mid), (transverse, 5, 0.7 * half), power=3.0)
    canvas.paint("vertebra_posterior_elements", pieces, over)


def _paint_spine(canvas: _Canvas, levels) -> None:
    """Vertebrae, discs, the spinal canal (down into the sacrum) and the cord (ending at L1/L2)."""
    for level, next_level in zip(levels, [*levels[1:], None]):
        _paint_vertebra(canvas, level, next_level)
    heights = np.array([-70.0, -20.0, 10.0, 80.0, 150.0, 250.0, 400.0, 470.0, 620.0])
    ry = np.interp(heights, [0, 180, 460], [17.0, 15.0, 8.0])
    canal = np.interp(heights, [-70, 0, 180, 300, 460, 620], [6.0, 10.0, 8.0, 7.5, 9.0, 9.0])
    centre = np.column_stack([np.zeros_like(heights), _canal_y(canvas.anat, heights, ry, canal), heights])
    canvas.paint("spinal_channel", _tube(canvas.grid, centre, canal), _over("bone"))
    cord = centre[heights >= 150]
    cord_top = np.array([[0.0, cord[0, 1], 135.0]])
    canvas.paint("spinal_cord", _tube(canvas.grid, np.vstack([cord_top, cord]), 5.0), _over("bone"))


def _paint_all(canvas: _Canvas) -> None:
    """Paint every structure; later steps overwrite earlier ones only where ``_over`` allows."""
    levels = _vertebral_levels()
    _paint_body(canvas)
    _paint_lungs(canvas)
    _paint_intestine(canvas)
    _paint_abdomen(canvas)
    _paint_pelvis(canvas)
    _paint_thorax(canvas)
    _paint_muscles(canvas)
    _paint_vessels(canvas)
    _paint_thoracic_cage(canvas, levels)
    _paint_pelvic_bones(canvas)
    _paint_limb_bones(canvas)  # after the hips: the femoral heads sit in the acetabula
    _paint_spine(canvas, levels)
